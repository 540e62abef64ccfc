"""The fixed held-out evaluation set: Mock World instances from a seed no round uses."""

import time
from collections import Counter

from dagster import AssetExecutionContext, MaterializeResult, asset

from flywheel_assets.assets.common import write_stage
from flywheel_assets.resources import RoundConfigResource, WarehouseResource
from flywheel_assets.store.rows import eval_task_rows
from flywheel_assets.store.schema import EVAL_ROUND
from flywheel_assets.world.synthesis import seed_instances

EVAL_GROUP = "held_out"


@asset(group_name=EVAL_GROUP, kinds={"python", "duckdb"})
def eval_tasks(context: AssetExecutionContext, warehouse: WarehouseResource,
               round_config: RoundConfigResource) -> MaterializeResult:
    """Held-out evaluation instances (round 'eval'): never trained on, the same every time
    for the same seed, so checkpoints of different rounds are compared on one set."""
    started = time.perf_counter()
    knobs = round_config.checked()
    batch = seed_instances(knobs.domain_names(), knobs.eval_per_domain, seed=knobs.eval_seed, round_key=EVAL_ROUND)
    by_domain = Counter(i.domain for i in batch.instances)
    figures = {"instances": len(batch.instances), **{f"instances_{d}": n for d, n in sorted(by_domain.items())}}
    return write_stage(context, warehouse, "eval_tasks", EVAL_ROUND, eval_task_rows(batch), figures, started)
