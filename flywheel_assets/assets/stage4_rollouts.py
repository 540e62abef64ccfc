"""Stage 4: the round's policy and the teacher play every instance against the mock
environment (mock user, mock tools behind the task-level consistency cache): procedural, or
played by LLMs with ``--world llm`` (their calls cached in the warehouse and logged in
``llm_calls`` with the round's rows)."""

import time
from collections import Counter

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from flywheel_assets.assets.common import ROUND_GROUP, progress_logger, summary_figures, write_stage
from flywheel_assets.assets.world_llm import stage_world
from flywheel_assets.partitions import previous_round, rounds_partitions
from flywheel_assets.assets.checkpoint_source import round_policy
from flywheel_assets.resources import (PolicyResource, RoundConfigResource, TrainingResource, WarehouseResource,
                                       WorldResource)
from flywheel_assets.store.rows import instances_from_rows, rollout_rows
from flywheel_assets.world import pipeline
from flywheel_assets.world.metrics import batch_summary
from flywheel_assets.world.tasks import SIMULATOR_FAILURES


@asset(partitions_def=rounds_partitions, group_name=ROUND_GROUP, deps=["task_instances"], kinds={"python", "duckdb"})
def rollouts(context: AssetExecutionContext, warehouse: WarehouseResource, policy: PolicyResource,
             round_config: RoundConfigResource, training: TrainingResource, world: WorldResource) -> MaterializeResult:
    """Rollouts: several episodes per instance by the policy, and one by the teacher."""
    started = time.perf_counter()
    round_key = context.partition_key
    config = round_config.round_config()
    store = warehouse.warehouse()
    instances = instances_from_rows(store.read_round("task_instances", round_key))
    cold_start = (not config.first_round_policy_rollouts and previous_round(round_key) is None
                  and policy.settings().name == "embedded")
    with stage_world(warehouse, world, round_key, "rollouts", ("user", "tool", "teacher")) as llm:
        # a cold start plays no policy: the untrained base would fail everything
        agent = None if cold_start else llm.bind(round_policy(store, round_key, policy, training, context.log.info),
                                                 round_key)
        teacher = llm.teacher(round_key) or policy.teacher()
        played_by = agent.name if agent else "nobody (cold start: the teacher's rollouts only)"
        context.log.info(f"{round_key}: {len(instances)} instances × {config.rollouts_per_instance} rollouts "
                         f"by {played_by}" + (f", plus one each by {teacher.name}" if teacher else "")
                         + (f"; LLM roles: {', '.join(llm.llm_roles)}" if llm.llm_roles else ""))
        trajectories = pipeline.rollouts(config, instances, agent, teacher,
                                         progress=progress_logger(context, f"{played_by} episodes finished"),
                                         user_factory=llm.roles.user_factory, backend_for=llm.roles.backend_for)
    summary = batch_summary(trajectories, [])
    failed_by = Counter(t.failed_by for t in trajectories if t.failed_by in SIMULATOR_FAILURES)
    figures = {"episodes": len(trajectories),
               **summary_figures(summary, ["tool_calls", "cache_hit_rate", "tool_errors", "turns"]),
               **{f"simulator_failures_{who}": failed_by.get(who, 0) for who in ("user", "tool")},
               **llm.figures()}
    agent_name = agent.name if agent else ""
    return write_stage(context, warehouse, "rollouts", round_key, rollout_rows(trajectories, agent_name), figures,
                       started, {"policy": MetadataValue.text(agent_name or "none (cold start)"),
                                 "terminations": MetadataValue.json(summary["terminations"])},
                       extra={"llm_calls": llm.call_rows()})
