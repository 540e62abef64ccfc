"""The fixed held-out evaluation set: Mock World instances from a seed no round uses, in
every phase (linear seed tasks, back-translated branches, adversarial users, verified
augmented variants like those a round carries in), so the evaluation can report each."""

import time
from collections import Counter

from dagster import AssetExecutionContext, MaterializeResult, asset

from flywheel_assets.assets.common import write_stage
from flywheel_assets.resources import RoundConfigResource, WarehouseResource
from flywheel_assets.store.rows import eval_task_rows
from flywheel_assets.store.schema import EVAL_ROUND
from flywheel_assets.world import pipeline
from flywheel_assets.world.domains import DOMAINS

EVAL_GROUP = "held_out"


def heldout_config(round_settings: pipeline.RoundConfig) -> pipeline.RoundConfig:
    """The held-out set's synthesis: its own seed and size, one branch per tree, half of the
    branches adversarial, so every phase is represented. It is built from the round's
    built-in packs (all of them when the round names none): a domain file's tasks are
    written by an LLM each round and trained on, not held out."""
    packs = round_settings.pack_names or tuple(sorted(DOMAINS))
    return round_settings.replace(seed=round_settings.eval_seed, tasks_per_domain=round_settings.eval_per_domain,
                                  backtranslated_per_tree=1, adversarial_share=0.5, domains=",".join(packs),
                                  domain_files="")


@asset(group_name=EVAL_GROUP, kinds={"python", "duckdb"})
def eval_tasks(context: AssetExecutionContext, warehouse: WarehouseResource,
               round_config: RoundConfigResource) -> MaterializeResult:
    """Held-out evaluation instances (round 'eval'): never trained on, the same every time
    for the same seed, so checkpoints of different rounds are compared on one set."""
    started = time.perf_counter()
    config = heldout_config(round_config.round_config())
    batch = pipeline.seed_tasks(config, EVAL_ROUND)
    instances = pipeline.task_instances(config, EVAL_ROUND, batch, pipeline.behavior_trees(batch.tasks))
    augmented = pipeline.augmented_heldout(config, EVAL_ROUND, instances)
    instances += augmented.variants
    augment_counts = augmented.counts()
    by_domain = Counter(i.domain for i in instances)
    by_phase = Counter(i.phase for i in instances)
    figures = {"instances": len(instances), **{f"instances_{d}": n for d, n in sorted(by_domain.items())},
               **{f"phase_{p}": n for p, n in sorted(by_phase.items())},
               "augmented_not_kept": augment_counts["dropped"] + augment_counts["not_applicable"]}
    return write_stage(context, warehouse, "eval_tasks", EVAL_ROUND, eval_task_rows(batch, instances), figures,
                       started)
