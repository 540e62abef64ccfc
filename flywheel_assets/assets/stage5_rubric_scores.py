"""Stage 5: every rollout scored by its instance's rubric."""

import time

from dagster import AssetExecutionContext, MaterializeResult, asset

from flywheel_assets.assets.common import ROUND_GROUP, summary_figures, write_stage
from flywheel_assets.assets.world_llm import stage_world
from flywheel_assets.partitions import rounds_partitions
from flywheel_assets.resources import RoundConfigResource, WarehouseResource, WorldResource
from flywheel_assets.store.rows import instances_from_rows, score_rows, trajectories_from_rows
from flywheel_assets.world import pipeline
from flywheel_assets.world.metrics import batch_summary, failure_distribution

POLICY_FIGURES = ["pass_rate", "reward_mean", "reward_var", "saturated_groups", "groups", "cache_hit_rate"]


@asset(partitions_def=rounds_partitions, group_name=ROUND_GROUP, deps=["task_instances", "rollouts"],
       kinds={"python", "duckdb"})
def rubric_scores(context: AssetExecutionContext, warehouse: WarehouseResource, world: WorldResource,
                  round_config: RoundConfigResource) -> MaterializeResult:
    """Rubric scores: sub-goals, required interactions, the prohibited-action gate and proper
    termination, from observable behaviour only. Figures are the policy's (role 'policy');
    the teacher's pass rate is reported beside them, and the policy's failures by type
    (``failures.<type>``: prohibited action, asked nothing, wrong argument, missed sub-goal,
    never ended). With an LLM judge (``--world llm``),
    the items predicates cannot decide are judged too; both verdicts are recorded per item."""
    started = time.perf_counter()
    round_key = context.partition_key
    round_config.round_config()  # makes the round's domain files known to this process
    store = warehouse.warehouse()
    instances = instances_from_rows(store.read_round("task_instances", round_key))
    rollout_rows = store.read_round("rollouts", round_key)
    trajectories = trajectories_from_rows(rollout_rows)
    with stage_world(warehouse, world, round_key, "rubric_scores", ("judge",)) as llm:
        scores = pipeline.rubric_scores(instances, trajectories, judge=llm.roles.judge)
    policy_names = {r["policy"] for r in rollout_rows if r["role"] == "policy"}
    rows = score_rows(scores, trajectories, next(iter(policy_names), ""))
    by_role: dict[str, tuple[list, list]] = {"policy": ([], []), "teacher": ([], [])}
    for trajectory, score, row in zip(trajectories, scores, rows):
        by_role[row["role"]][0].append(trajectory)
        by_role[row["role"]][1].append(score)
    figures = {"scores": len(scores), "judge_failures": sum(1 for s in scores if s.failed_by == "judge"),
               **llm.figures()}
    if by_role["policy"][1]:  # a cold start has no policy episodes: no pass rate of 0 to report
        failures = failure_distribution(*by_role["policy"])
        figures.update({**summary_figures(batch_summary(*by_role["policy"]), POLICY_FIGURES),
                        **{f"failures.{kind}": n for kind, n in failures.items()}})
    if by_role["teacher"][1]:
        figures.update(summary_figures(batch_summary(*by_role["teacher"]), ["pass_rate"], prefix="teacher_"))
    return write_stage(context, warehouse, "rubric_scores", round_key, rows, figures, started,
                       extra={"llm_calls": llm.call_rows()})
