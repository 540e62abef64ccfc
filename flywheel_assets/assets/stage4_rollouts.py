"""Stage 4: the round's policy and the teacher play every instance against the mock
environment (mock user, mock tools behind the task-level consistency cache)."""

import time

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from flywheel_assets.assets.common import (ROUND_GROUP, endpoint_failures_name, progress_logger, summary_figures,
                                           write_stage)
from flywheel_assets.partitions import rounds_partitions
from flywheel_assets.assets.checkpoint_source import round_policy
from flywheel_assets.resources import PolicyResource, RoundConfigResource, TrainingResource, WarehouseResource
from flywheel_assets.store.rows import instances_from_rows, rollout_rows
from flywheel_assets.world import pipeline
from flywheel_assets.world.metrics import batch_summary


@asset(partitions_def=rounds_partitions, group_name=ROUND_GROUP, deps=["task_instances"], kinds={"python", "duckdb"})
def rollouts(context: AssetExecutionContext, warehouse: WarehouseResource, policy: PolicyResource,
             round_config: RoundConfigResource, training: TrainingResource) -> MaterializeResult:
    """Rollouts: several episodes per instance by the policy, and one by the teacher."""
    started = time.perf_counter()
    round_key = context.partition_key
    config = round_config.round_config()
    store = warehouse.warehouse()
    instances = instances_from_rows(store.read_round("task_instances", round_key))
    agent, teacher = round_policy(store, round_key, policy, training, context.log.info), policy.teacher()
    context.log.info(f"{round_key}: {len(instances)} instances × {config.rollouts_per_instance} rollouts "
                     f"by {agent.name}" + (f", plus one each by {teacher.name}" if teacher else ""))
    with endpoint_failures_name(round_key):
        trajectories = pipeline.rollouts(config, instances, agent, teacher,
                                         progress=progress_logger(context, f"{agent.name} episodes finished"))
    summary = batch_summary(trajectories, [])
    figures = {"episodes": len(trajectories),
               **summary_figures(summary, ["tool_calls", "cache_hit_rate", "tool_errors", "turns"])}
    return write_stage(context, warehouse, "rollouts", round_key, rollout_rows(trajectories, agent.name), figures,
                       started, {"policy": MetadataValue.text(agent.name),
                                 "terminations": MetadataValue.json(summary["terminations"])})
