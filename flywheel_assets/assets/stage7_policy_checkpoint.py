"""Stage 7: train this round's checkpoint on what the round produced, as ``plan.plan_round``
decides (round 0: SFT cold start on the teacher's solutions; later: GRPO on the round's own
groups, then rejection-sampled fine-tuning). The model is a folder on disk; the warehouse row
holds its metadata and the plan."""

import time

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from flywheel_assets.assets.checkpoint_source import checkpoint_for_round
from flywheel_assets.assets.common import ROUND_GROUP, round_to, write_stage
from flywheel_assets.partitions import previous_round, rounds_partitions
from flywheel_assets.resources import PolicyResource, RoundConfigResource, TrainingResource, WarehouseResource
from flywheel_assets.store.rows import instances_from_rows, scores_from_rows, trajectories_from_rows
from flywheel_training.plan import plan_round
from flywheel_training.rounds import train_round


@asset(partitions_def=rounds_partitions, group_name=ROUND_GROUP, deps=["rollouts", "rubric_scores", "hard_samples"],
       kinds={"pytorch", "duckdb"})
def policy_checkpoint(context: AssetExecutionContext, warehouse: WarehouseResource, policy: PolicyResource,
                      training: TrainingResource, round_config: RoundConfigResource) -> MaterializeResult:
    """Policy checkpoint: the model folder trained this round, with its sha256, the checkpoint
    it started from, data counts, losses and group rewards."""
    started = time.perf_counter()
    round_key = context.partition_key
    world = round_config.round_config()  # also makes the round's domain files known to this process
    store = warehouse.warehouse()
    previous, previous_id = checkpoint_for_round(store, round_key, training)
    rollout_rows = store.read_round("rollouts", round_key)
    policy_names = sorted({r["policy"] for r in rollout_rows if r["role"] == "policy"})
    teacher_names = sorted({r["policy"] for r in rollout_rows if r["role"] == "teacher"})
    last_log = [0.0]

    def progress(logs: dict) -> None:
        if "warning" in logs:
            context.log.warning(logs["warning"])
        elif time.monotonic() - last_log[0] > 10:
            last_log[0] = time.monotonic()
            context.log.info(f"{round_key} training: " + ", ".join(f"{k}={v}" for k, v in sorted(logs.items())))

    plan = plan_round(round_key, previous_round=previous_round(round_key), config=training.settings())
    context.log.info(plan.describe())
    meta = train_round(
        plan, previous, training.checkpoints() / round_key,
        instances=instances_from_rows(store.read_round("task_instances", round_key)),
        trajectories=trajectories_from_rows(rollout_rows),
        scores=scores_from_rows(store.read_round("rubric_scores", round_key)),
        hard_samples=instances_from_rows(r for r in store.read_round("hard_samples", round_key) if r["kept"]),
        policy_name=policy_names[0] if policy_names else "", teacher_name=teacher_names[0] if teacher_names else "teacher",
        config=training.settings(), progress=progress,
        uniform_fixes_seed=world.uniform_fixes_seed(round_key))
    executed = meta.plan.get("executed", [])
    capped = [r["stage"] for r in executed if r.get("cut_by_time_cap")]
    row = {"checkpoint_id": meta.sha256, "path": meta.path, "kind": meta.kind, "base_checkpoint": previous_id,
           "base_path": meta.base_checkpoint, "base_sha256": meta.base_sha256,
           "policy": policy_names[0] if policy_names else None, "data_counts": meta.data_counts,
           "losses": meta.losses, "rewards": meta.rewards, "meta": meta.reproducible(), "plan": meta.plan}
    figures = {"train_seconds": round_to(sum(float(m.get("seconds", 0.0)) for m in meta.metrics.values()
                                              if isinstance(m, dict))),
               # absent, not 0.0, when the trainer logged no loss (a stage shorter than its logging interval)
               **({"final_loss": round_to(meta.losses[-1])} if meta.losses else {}),
               "time_cap_hit": len(capped),
               **{f"{r['stage']}_steps": int(r.get("steps", 0)) for r in executed},
               **{k: int(v) for k, v in meta.data_counts.items()}}
    return write_stage(context, warehouse, "policy_checkpoints", round_key, [row], figures, started,
                       {"path": MetadataValue.path(meta.path), "sha256": MetadataValue.text(meta.sha256),
                        "kind": MetadataValue.text(meta.kind),
                        "base": MetadataValue.text(previous_id or f"built base {meta.base_sha256[:12]}"),
                        "plan": MetadataValue.json(meta.plan),
                        **({"time_cap_hit": MetadataValue.text(f"CUT by the wall-clock cap: {', '.join(capped)}")}
                           if capped else {})})
