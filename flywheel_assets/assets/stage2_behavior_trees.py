"""Stage 2: each seed task's linear behaviour tree and its conditional expansion."""

import statistics
import time

from dagster import AssetExecutionContext, MaterializeResult, asset

from flywheel_assets.assets.common import ROUND_GROUP, round_to, write_stage
from flywheel_assets.partitions import rounds_partitions
from flywheel_assets.resources import RoundConfigResource, WarehouseResource
from flywheel_assets.store.rows import seed_batch_from_rows, tree_rows
from flywheel_assets.world import pipeline


@asset(partitions_def=rounds_partitions, group_name=ROUND_GROUP, deps=["seed_tasks"], kinds={"python", "duckdb"})
def behavior_trees(context: AssetExecutionContext, warehouse: WarehouseResource,
                   round_config: RoundConfigResource) -> MaterializeResult:
    """Behaviour trees: the seed workflow as a linear tree, then expanded with the domain
    policy's conditional branches (order delivered → return, else → cancel, …)."""
    started = time.perf_counter()
    round_key = context.partition_key
    round_config.round_config()  # makes the round's domain files known to this process
    batch = seed_batch_from_rows(warehouse.warehouse().read_round("seed_tasks", round_key))
    trees = pipeline.behavior_trees(batch.tasks)
    expanded = [t.stats() for t in trees if t.phase == "expanded"]
    figures = {"trees": len(trees), "expanded_trees": len(expanded),
               "branches_mean": round_to(statistics.fmean(s["branches"] for s in expanded)) if expanded else 0.0,
               "paths_mean": round_to(statistics.fmean(s["paths"] for s in expanded)) if expanded else 0.0}
    return write_stage(context, warehouse, "behavior_trees", round_key, tree_rows(trees), figures, started)
