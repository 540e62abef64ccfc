"""The warehouse schema: one table per asset, the bookkeeping tables and the lineage view.

Table and column names are part of the user interface (the README's SQL uses them). Every
asset table has ``round`` (the partition key), its own id and its parent id columns; the
full object goes into a JSON column (``task``, ``tree``, ``instance``, ``trajectory``,
``score``) so the data model can grow without a warehouse migration, while the scalar
columns beside it are what people filter and join on.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]  # (name, DuckDB type), in table order
    id_column: str
    description: str
    asset: str = ""  # the asset that writes it, when its name differs from the table's
    unique: str = ""  # a column declared PRIMARY KEY (only tables that are not replaced per round)

    @property
    def asset_name(self) -> str:
        return self.asset or self.name

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    @property
    def types(self) -> dict[str, str]:
        return dict(self.columns)


def _table(name: str, id_column: str, description: str, *columns: tuple[str, str], asset: str = "") -> Table:
    # position: the row's place in the stage's output. Later stages read rows back in that
    # order, because the stage functions draw from seeded RNGs while walking their inputs.
    return Table(name, (("round", "VARCHAR"),) + columns + (("position", "BIGINT"),), id_column, description, asset)


SEED_TASKS = _table(
    "seed_tasks", "task_id", "complete tasks (goal, workflow, world) and their information-deficient seed instance",
    ("task_id", "VARCHAR"), ("domain", "VARCHAR"), ("task_type", "VARCHAR"), ("goal", "VARCHAR"),
    ("seed", "VARCHAR"), ("required_slots", "JSON"), ("seed_instance_id", "VARCHAR"),
    ("task", "JSON"), ("seed_instance", "JSON"),
)
BEHAVIOR_TREES = _table(
    "behavior_trees", "tree_id", "linear trees and their conditional expansions, per seed task",
    ("tree_id", "VARCHAR"), ("task_id", "VARCHAR"), ("domain", "VARCHAR"), ("phase", "VARCHAR"),
    ("parent_ids", "JSON"), ("depth", "BIGINT"), ("branches", "BIGINT"), ("paths", "BIGINT"), ("tree", "JSON"),
)
TASK_INSTANCES = _table(
    "task_instances", "instance_id",
    "what episodes are played on: seed rewrites, back-translated branches, adversarial variants, "
    "and the previous round's hard samples (carried_from names that round)",
    ("instance_id", "VARCHAR"), ("task_id", "VARCHAR"), ("domain", "VARCHAR"), ("task_type", "VARCHAR"),
    ("phase", "VARCHAR"), ("persona", "VARCHAR"), ("adversarial", "BOOLEAN"), ("parent_ids", "JSON"),
    ("carried_from", "VARCHAR"), ("instruction", "VARCHAR"), ("instance", "JSON"),
)
ROLLOUTS = _table(
    "rollouts", "trajectory_id", "episodes of the policy (role 'policy') and the teacher (role 'teacher')",
    ("trajectory_id", "VARCHAR"), ("instance_id", "VARCHAR"), ("policy", "VARCHAR"), ("role", "VARCHAR"),
    ("termination", "VARCHAR"), ("turns", "BIGINT"), ("tool_calls", "BIGINT"), ("cache_hits", "BIGINT"),
    ("tool_errors", "BIGINT"), ("trajectory", "JSON"),
)
RUBRIC_SCORES = _table(
    "rubric_scores", "score_id", "one rubric score per rollout",
    ("score_id", "VARCHAR"), ("trajectory_id", "VARCHAR"), ("instance_id", "VARCHAR"), ("policy", "VARCHAR"),
    ("role", "VARCHAR"), ("reward", "DOUBLE"), ("success", "BOOLEAN"), ("gate", "VARCHAR"),
    ("failed_items", "JSON"), ("score", "JSON"),
)
HARD_SAMPLES = _table(
    "hard_samples", "instance_id",
    "every augmentation candidate of a failed instance; kept ones (kept = true) go into the next round",
    ("instance_id", "VARCHAR"), ("parent_id", "VARCHAR"), ("operator", "VARCHAR"), ("kept", "BOOLEAN"),
    ("reason", "VARCHAR"), ("task_id", "VARCHAR"), ("domain", "VARCHAR"), ("instruction", "VARCHAR"),
    ("instance", "JSON"),
)
EVAL_TASKS = _table(
    "eval_tasks", "instance_id", "the fixed held-out evaluation instances (round = 'eval', never trained on); task is NULL for an "
    "augmented variant on a task of its own",
    ("instance_id", "VARCHAR"), ("task_id", "VARCHAR"), ("domain", "VARCHAR"), ("task_type", "VARCHAR"),
    ("persona", "VARCHAR"), ("instruction", "VARCHAR"), ("instance", "JSON"), ("task", "JSON"),
)
POLICY_CHECKPOINTS = _table(
    "policy_checkpoints", "checkpoint_id",
    "the round's trained checkpoint: a model folder on disk (never loaded through an IO manager) and its metadata; "
    "base_checkpoint is the previous round's checkpoint (NULL in r000, trained from the built base: base_sha256)",
    ("checkpoint_id", "VARCHAR"), ("path", "VARCHAR"), ("kind", "VARCHAR"), ("base_checkpoint", "VARCHAR"),
    ("base_path", "VARCHAR"), ("base_sha256", "VARCHAR"), ("policy", "VARCHAR"), ("data_counts", "JSON"),
    ("losses", "JSON"), ("rewards", "JSON"), ("meta", "JSON"), ("plan", "JSON"), asset="policy_checkpoint",
)
EVALUATIONS = _table(
    "evaluations", "evaluation_id",
    "the round's checkpoint on the fixed held-out set: pass^1, pass^k (tau2's definition) and mean reward, with "
    "95% bootstrap intervals over tasks (pass_1_low/high, pass_k_low/high; row holds every figure's), "
    "greedy_pass_1: one more episode per task with greedy decoding (NULL when training.eval_greedy is off), "
    "overall ('all'), per domain ('domain:…') and per phase ('phase:…'); subject 'checkpoint' (the round's) or "
    "'base' (in r000: the base it started from, before any task training; checkpoint_id = its sha256)",
    ("evaluation_id", "VARCHAR"), ("checkpoint_id", "VARCHAR"), ("group_name", "VARCHAR"), ("tasks", "BIGINT"),
    ("trials", "BIGINT"), ("pass_1", "DOUBLE"), ("pass_k", "DOUBLE"), ("reward_mean", "DOUBLE"), ("row", "JSON"),
    ("subject", "VARCHAR"), ("pass_1_low", "DOUBLE"), ("pass_1_high", "DOUBLE"), ("pass_k_low", "DOUBLE"),
    ("pass_k_high", "DOUBLE"), ("greedy_pass_1", "DOUBLE"), ("greedy_pass_1_low", "DOUBLE"),
    ("greedy_pass_1_high", "DOUBLE"), asset="evaluation",
)
EXTERNAL_EVALUATIONS = _table(
    "external_evaluations", "evaluation_id",
    "the round's checkpoint on the external benchmarks (BFCL-v4 multi-turn, tau2-bench): one row per benchmark, "
    "category or domain, metric and k; model is the agent policy, user_model tau2's user simulator",
    ("evaluation_id", "VARCHAR"), ("checkpoint_id", "VARCHAR"), ("benchmark", "VARCHAR"), ("category", "VARCHAR"),
    ("split", "VARCHAR"), ("metric", "VARCHAR"), ("value", "DOUBLE"), ("k", "BIGINT"), ("trials", "BIGINT"),
    ("entries", "BIGINT"), ("model", "VARCHAR"), ("user_model", "VARCHAR"), asset="external_evaluation",
)
ROUND_METRICS = Table(
    "round_metrics",
    (("round", "VARCHAR"), ("stage", "VARCHAR"), ("metric", "VARCHAR"), ("value", "DOUBLE"),
     ("recorded_at", "TIMESTAMP")),
    "metric", "figures of each stage of each round (long format: one row per metric)",
)
ROUND_PARTITIONS = Table(
    "round_partitions",
    (("table_name", "VARCHAR"), ("round", "VARCHAR"), ("row_count", "BIGINT"), ("written_at", "TIMESTAMP")),
    "table_name", "which (table, round) partitions were written, so an empty partition differs from a missing one",
)

LLM_CACHE = Table(
    "llm_cache",
    (("request_hash", "VARCHAR"), ("role", "VARCHAR"), ("model", "VARCHAR"), ("response", "JSON"),
     ("prompt_tokens", "BIGINT"), ("completion_tokens", "BIGINT"), ("latency_ms", "DOUBLE"),
     ("first_round", "VARCHAR")),
    "request_hash",
    "the LLM call cache, content-addressed (hash of model, messages, tools, sampling parameters, sample index): "
    "not per round, so re-materialising a round with the same configuration calls no endpoint; first_round is "
    "the round that first made the call",
    unique="request_hash",
)
LLM_CALLS = Table(
    "llm_calls",
    (("round", "VARCHAR"), ("stage", "VARCHAR"), ("call_index", "BIGINT"), ("role", "VARCHAR"), ("model", "VARCHAR"),
     ("request_hash", "VARCHAR"), ("cached", "BOOLEAN"), ("prompt_tokens", "BIGINT"), ("completion_tokens", "BIGINT"),
     ("latency_ms", "DOUBLE"), ("error", "VARCHAR")),
    "request_hash",
    "every LLM call a stage of a round made (cached = answered from llm_cache), replaced with the stage's rows",
)

WRITER_REJECTIONS = Table(
    "writer_rejections",
    (("round", "VARCHAR"), ("stage", "VARCHAR"), ("domain", "VARCHAR"), ("task_id", "VARCHAR"),
     ("task_seed", "VARCHAR"), ("kind", "VARCHAR"), ("reason", "VARCHAR"), ("request_hashes", "JSON")),
    "task_seed",
    "what an LLM writer wrote that the round did not keep, with the reason: kind 'instruction' (a pack task's "
    "rewrite; the procedural one was kept), 'task' (a domain file's task failed validation or replay), "
    "'condition' (a proposed policy condition was dropped; the task was kept) or 'unsolved' (the teacher could not "
    "solve the written task); request_hashes name the llm_calls / llm_cache rows of the writer's calls",
)

ASSET_TABLES: dict[str, Table] = {t.name: t for t in (
    SEED_TASKS, BEHAVIOR_TREES, TASK_INSTANCES, ROLLOUTS, RUBRIC_SCORES, HARD_SAMPLES, EVAL_TASKS,
    POLICY_CHECKPOINTS, EVALUATIONS, EXTERNAL_EVALUATIONS)}
STAGE_TABLES: dict[str, Table] = {LLM_CALLS.name: LLM_CALLS, WRITER_REJECTIONS.name: WRITER_REJECTIONS}
"""Per-(round, stage) tables written beside a stage's own rows (``replace_round(..., extra=...)``)."""
TABLES: dict[str, Table] = {**ASSET_TABLES, ROUND_METRICS.name: ROUND_METRICS,
                            ROUND_PARTITIONS.name: ROUND_PARTITIONS, LLM_CACHE.name: LLM_CACHE,
                            LLM_CALLS.name: LLM_CALLS, WRITER_REJECTIONS.name: WRITER_REJECTIONS}

STAGE_PARENTS: dict[str, tuple[str, ...]] = {
    "seed_tasks": (),
    "behavior_trees": ("seed_tasks",),
    "task_instances": ("seed_tasks", "behavior_trees"),
    "rollouts": ("task_instances",),
    "rubric_scores": ("task_instances", "rollouts"),
    "hard_samples": ("task_instances", "rollouts", "rubric_scores"),
    "policy_checkpoints": ("rollouts", "rubric_scores", "hard_samples"),
    "evaluations": ("policy_checkpoints",),
    "external_evaluations": ("policy_checkpoints",),
}
"""A round's tables and the tables of the same round each is derived from (the assets' deps;
a test keeps them equal), in data-flow order: rewriting one makes everything derived from it
stale."""
ROUND_STAGES: tuple[str, ...] = tuple(STAGE_PARENTS)

NEXT_ROUND_READS: dict[str, str] = {"hard_samples": "task_instances", "policy_checkpoints": "rollouts"}
"""What round r+1 reads of round r, and its first stage that reads it: its task_instances
carry r's kept hard samples in; its rollouts play r's checkpoint (and its training starts
from it)."""

EVAL_ROUND = "eval"
"""The ``round`` value of the held-out set: it belongs to no flywheel round."""


@dataclass(frozen=True)
class ParentEdge:
    """A parent reference: ``column`` of ``table`` names the parent; ``is_list`` for JSON arrays."""

    table: str
    column: str
    is_list: bool
    relation_sql: str  # SQL expression over the child row that names the relation
    where_sql: str = "TRUE"  # which child rows have this edge


WRITTEN_BY = "json_extract(task, '$.written_by.request_hashes')"
"""A domain file's task names the writer's calls (``llm_calls.request_hash``) that wrote it."""

PARENT_EDGES: tuple[ParentEdge, ...] = (
    ParentEdge("seed_tasks", WRITTEN_BY, True, "'written_by_llm'", "json_extract(task, '$.written_by') IS NOT NULL"),
    ParentEdge("behavior_trees", "task_id", False, "'tree_of_task'"),
    ParentEdge("behavior_trees", "parent_ids", True, "'expanded_from'"),
    # only seed instances point at their task directly: derived instances reach it through
    # their parents (an augmented variant's task_id may name a task synthesised on the fly)
    ParentEdge("task_instances", "task_id", False, "'instance_of_task'", "json_array_length(parent_ids) = 0"),
    # how the instance was derived from its parent: its phase, or carried over from a round
    ParentEdge("task_instances", "parent_ids", True,
               "CASE WHEN carried_from IS NOT NULL THEN 'carried_over' ELSE phase END"),
    ParentEdge("rollouts", "instance_id", False, "'rollout_of'"),
    ParentEdge("rubric_scores", "trajectory_id", False, "'score_of'"),
    ParentEdge("hard_samples", "parent_id", False, "'augmented_from:' || operator"),
    ParentEdge("policy_checkpoints", "base_checkpoint", False, "'trained_from'"),
    # the built base is a folder, not a row: its evaluation has no parent in the warehouse
    ParentEdge("evaluations", "checkpoint_id", False, "'evaluation_of'", "subject IS DISTINCT FROM 'base'"),
    ParentEdge("external_evaluations", "checkpoint_id", False, "'external_evaluation_of:' || benchmark"),
)


def lineage_view_sql() -> str:
    """``lineage(child_id, parent_id, relation, round)``: a view over the tables' own id and
    parent columns, so rewriting a round can never leave stale or duplicated lineage."""
    parts = []
    for edge in PARENT_EDGES:
        child = ASSET_TABLES[edge.table].id_column
        if edge.is_list:
            parts.append(
                f"SELECT {child} AS child_id, unnest(from_json({edge.column}, '[\"VARCHAR\"]')) AS parent_id, "
                f"{edge.relation_sql} AS relation, round FROM {edge.table} WHERE {edge.where_sql}")
        else:
            parts.append(
                f"SELECT {child} AS child_id, {edge.column} AS parent_id, {edge.relation_sql} AS relation, round "
                f"FROM {edge.table} WHERE {edge.column} IS NOT NULL AND {edge.where_sql}")
    return "CREATE OR REPLACE VIEW lineage AS\n" + "\nUNION ALL\n".join(parts)


def lineage_ids_sql() -> str:
    """``(id, table_name, round)`` of every row that lineage can point at: the asset tables'
    rows and the writer's LLM calls (a written task's parents)."""
    return "\nUNION ALL ".join([f"SELECT {t.id_column} AS id, '{t.name}' AS table_name, round FROM {t.name}"
                                for t in ASSET_TABLES.values() if t.name != "eval_tasks"] + [WRITER_CALL_IDS])


WRITER_CALL_IDS = ("SELECT DISTINCT request_hash AS id, 'llm_calls' AS table_name, round FROM llm_calls "
                   "WHERE stage = 'seed_tasks' AND role = 'writer'")


def downstream_stages(table: str) -> tuple[str, ...]:
    """The stages of a round derived, directly or not, from ``table``, in data-flow order; ()
    for tables outside the round (eval_tasks)."""
    derived: set[str] = set()
    for stage in ROUND_STAGES:  # data-flow order: a stage's parents come before it
        if any(parent == table or parent in derived for parent in STAGE_PARENTS[stage]):
            derived.add(stage)
    return tuple(s for s in ROUND_STAGES if s in derived)


def next_round_stale(stages: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The stages of round r+1 made stale when ``stages`` of round r are rewritten: those that
    read them, and what is derived from those; () when round r+1 reads none of them."""
    entries = {NEXT_ROUND_READS[s] for s in stages if s in NEXT_ROUND_READS}
    stale = entries | {d for e in entries for d in downstream_stages(e)}
    return tuple(s for s in ROUND_STAGES if s in stale)


def create_table_sql(table: Table) -> str:
    columns = ", ".join(f"{name} {kind}" + (" PRIMARY KEY" if name == table.unique else "")
                        for name, kind in table.columns)
    return f"CREATE TABLE IF NOT EXISTS {table.name} ({columns})"
