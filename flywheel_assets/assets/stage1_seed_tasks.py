"""Stage 1: complete tasks per domain and their information-deficient seed instances."""

import time
from collections import Counter

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from flywheel_assets.assets.common import ROUND_GROUP, round_to, write_stage
from flywheel_assets.assets.world_llm import stage_world
from flywheel_assets.partitions import rounds_partitions
from flywheel_assets.resources import RoundConfigResource, WarehouseResource, WorldResource
from flywheel_assets.store.rows import seed_task_rows
from flywheel_assets.world import pipeline
from flywheel_assets.world.synthesis import SeedBatch


@asset(partitions_def=rounds_partitions, group_name=ROUND_GROUP, kinds={"python", "duckdb"})
def seed_tasks(context: AssetExecutionContext, warehouse: WarehouseResource, round_config: RoundConfigResource,
               world: WorldResource) -> MaterializeResult:
    """Seed tasks synthesised in the Mock World domain packs: goal, workflow and world, each
    rewritten into an information-deficient instruction plus hidden user context."""
    started = time.perf_counter()
    round_key = context.partition_key
    config = round_config.round_config()
    # A domain file's tasks are written, replayed (its simulated tools need the LLM tool) and
    # solved by the teacher against the round's user before they are kept.
    roles = ("writer", "tool", "user", "teacher") if config.written_domain_names else ("writer",)
    with stage_world(warehouse, world, round_key, "seed_tasks", roles) as llm:
        batch = pipeline.seed_tasks(config, round_key, writer=llm.roles.writer, world_writer=llm.roles.world_writer,
                                    teacher=llm.teacher(round_key), user_factory=llm.roles.user_factory)
    by_domain = Counter(t.domain for t in batch.tasks)
    rejected = Counter(r["kind"] for r in batch.writer_rejections)
    figures = {"tasks": len(batch.tasks), "skipped_seeds": len(batch.skipped),
               "writer_rejections": len(batch.writer_rejections), **llm.figures(),
               **{f"writer_rejections.{kind}": n for kind, n in sorted(rejected.items())},
               **written_figures(config, batch), **{f"tasks_{d}": n for d, n in sorted(by_domain.items())}}
    return write_stage(context, warehouse, "seed_tasks", round_key, seed_task_rows(batch), figures, started,
                       {"skipped": MetadataValue.json(batch.skipped[:20]),
                        "writer_rejections": MetadataValue.json(batch.writer_rejections[:20])},
                       extra={"llm_calls": llm.call_rows(), "writer_rejections": batch.writer_rejections})


def written_figures(config: pipeline.RoundConfig, batch: SeedBatch) -> dict[str, float]:
    """Per domain file: the share of writer drafts that validated and replayed, and the
    teacher's solve rate on those."""
    figures: dict[str, float] = {}
    for name in config.written_domain_names:
        kept = sum(t.domain == name for t in batch.tasks)
        invalid = sum(r["domain"] == name and r["kind"] == "task" for r in batch.writer_rejections)
        unsolved = sum(r["domain"] == name and r["kind"] == "unsolved" for r in batch.writer_rejections)
        drafts, valid = kept + invalid + unsolved, kept + unsolved
        figures[f"writer_valid_share.{name}"] = round_to(valid / drafts) if drafts else 0.0
        figures[f"teacher_solve_rate.{name}"] = round_to(kept / valid) if valid else 0.0
    return figures
