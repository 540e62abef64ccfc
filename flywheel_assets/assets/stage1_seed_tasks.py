"""Stage 1: complete tasks per domain and their information-deficient seed instances."""

import time
from collections import Counter

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from flywheel_assets.assets.common import ROUND_GROUP, write_stage
from flywheel_assets.assets.world_llm import stage_world
from flywheel_assets.partitions import rounds_partitions
from flywheel_assets.resources import RoundConfigResource, WarehouseResource, WorldResource
from flywheel_assets.store.rows import seed_task_rows
from flywheel_assets.world import pipeline


@asset(partitions_def=rounds_partitions, group_name=ROUND_GROUP, kinds={"python", "duckdb"})
def seed_tasks(context: AssetExecutionContext, warehouse: WarehouseResource, round_config: RoundConfigResource,
               world: WorldResource) -> MaterializeResult:
    """Seed tasks synthesised in the Mock World domain packs: goal, workflow and world, each
    rewritten into an information-deficient instruction plus hidden user context."""
    started = time.perf_counter()
    round_key = context.partition_key
    with stage_world(warehouse, world, round_key, "seed_tasks", ("writer",)) as llm:
        batch = pipeline.seed_tasks(round_config.round_config(), round_key, writer=llm.roles.writer)
    by_domain = Counter(t.domain for t in batch.tasks)
    figures = {"tasks": len(batch.tasks), "skipped_seeds": len(batch.skipped),
               "writer_rejections": len(batch.writer_rejections), **llm.figures(),
               **{f"tasks_{d}": n for d, n in sorted(by_domain.items())}}
    return write_stage(context, warehouse, "seed_tasks", round_key, seed_task_rows(batch), figures, started,
                       {"skipped": MetadataValue.json(batch.skipped[:20]),
                        "writer_rejections": MetadataValue.json(batch.writer_rejections[:20])},
                       extra={"llm_calls": llm.call_rows()})
