-- Trace one warehouse row back to its seed task, across rounds.
--
-- Parameter: $id, any id in the warehouse (a hard sample, instance, trajectory, score,
-- tree or task id). One row per edge on the way up, nearest first: the child, how it was
-- derived (relation), its parent, and which table and round the parent lives in. The last
-- rows end at a seed task (parent_table = 'seed_tasks'); a task an LLM wrote for a domain
-- file goes one step further, to the writer's calls (relation 'written_by_llm',
-- parent_table = 'llm_calls': join llm_calls / llm_cache on request_hash for model and text).
--
--   flywheel lineage <id>      runs this file; or, from Python:
--   Warehouse(path).query(open("lineage.sql").read(), {"id": "<id>"})
WITH RECURSIVE
ids(id, table_name, round) AS (
    SELECT task_id, 'seed_tasks', round FROM seed_tasks
    UNION ALL SELECT tree_id, 'behavior_trees', round FROM behavior_trees
    UNION ALL SELECT instance_id, 'task_instances', round FROM task_instances
    UNION ALL SELECT instance_id, 'hard_samples', round FROM hard_samples
    UNION ALL SELECT trajectory_id, 'rollouts', round FROM rollouts
    UNION ALL SELECT score_id, 'rubric_scores', round FROM rubric_scores
    UNION ALL SELECT DISTINCT request_hash, 'llm_calls', round FROM llm_calls
              WHERE stage = 'seed_tasks' AND role = 'writer'
),
ancestry(depth, child_id, relation, parent_id, round) AS (
    SELECT 1, child_id, relation, parent_id, round FROM lineage WHERE child_id = $id
    UNION
    SELECT a.depth + 1, l.child_id, l.relation, l.parent_id, l.round
    FROM ancestry AS a JOIN lineage AS l ON l.child_id = a.parent_id
    WHERE a.depth < 100  -- ids are content hashes, so there are no cycles; this is a backstop
)
SELECT a.depth, a.child_id, a.round AS child_round, a.relation, a.parent_id,
       p.table_name AS parent_table, p.round AS parent_round
FROM ancestry AS a LEFT JOIN ids AS p ON p.id = a.parent_id
ORDER BY a.depth, a.relation, a.parent_id;
