"""One round's training, as plain functions: the checkpoint asset wraps ``train_round``.

Round 0 is the cold start: SFT of the freshly built base on the teacher's trajectories of
the instances it solved (the KEPT ones). Later rounds start from the previous checkpoint:
GRPO on the rubric reward over the round's own groups of policy rollouts (replayed: the
rollouts stage already played them with that checkpoint, so no generation here), then
rejection-sampled fine-tuning on the round's successful policy trajectories, the teacher's
solutions of the instances the policy failed, and teacher solutions of its hard samples.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flywheel_assets.world.tasks import SIMULATOR_FAILURES, Score, TaskInstance, Trajectory
from flywheel_training.checkpoints import CheckpointMeta, build_once, folder_sha256, read_meta, write_meta
from flywheel_training.config import TrainingConfig
from flywheel_training.plan import TrainingPlan
from flywheel_training.tiny import TinyConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def ensure_base(path: str | os.PathLike[str], config: TinyConfig | None = None,
                log: Callable[[str], None] | None = None) -> Path:
    """The embedded base checkpoint at ``path``, built (deterministically) if absent."""
    from flywheel_training.tiny import build_tiny

    def build(folder: Path) -> None:
        build_tiny(folder, config or TinyConfig(), log=log)
        write_meta(folder, kind="base")

    return build_once(path, build)


def _teacher_wins(trajectories: Sequence[Trajectory], scores: Sequence[Score], teacher_name: str) -> list[Trajectory]:
    ok = {s.trajectory_id for s in scores if s.success}
    return [t for t in trajectories if t.policy == teacher_name and t.trajectory_id in ok]


def without_simulator_failures(trajectories: Sequence[Trajectory], scores: Sequence[Score]
                               ) -> tuple[list[Trajectory], list[Score], dict[str, int]]:
    """The episodes a simulator (LLM user, LLM tool) or the judge failed are no signal about
    the agent: they leave the training data and the GRPO groups, counted by who failed."""
    judged_out = {s.trajectory_id for s in scores if getattr(s, "failed_by", None) == "judge"}
    dropped = {t.trajectory_id: t.failed_by for t in trajectories if t.failed_by in SIMULATOR_FAILURES}
    dropped.update({tid: "judge" for tid in judged_out})
    counts = Counter(f"excluded_{who}_simulator_failures" if who != "judge" else "excluded_judge_failures"
                     for who in dropped.values())
    return ([t for t in trajectories if t.trajectory_id not in dropped],
            [s for s in scores if s.trajectory_id not in dropped], dict(sorted(counts.items())))


def train_round(
    plan: TrainingPlan,
    previous: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    instances: Sequence[TaskInstance],
    trajectories: Sequence[Trajectory],
    scores: Sequence[Score],
    hard_samples: Sequence[TaskInstance],
    policy_name: str,
    teacher_name: str = "teacher",
    config: TrainingConfig | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    uniform_fixes_seed: str | None = None,
) -> CheckpointMeta:
    """Execute ``plan`` (from ``plan.plan_round``) from ``previous`` into ``output_dir``.

    Every planned stage runs its planned steps unless it has no data (recorded as skipped,
    with the reason) or the wall-clock safety cap cuts it (recorded as ``cut_by_time_cap``).
    ``uniform_fixes_seed`` makes the RFT stage's teacher solutions a uniform draw (``rft_data``).
    """
    from flywheel_training.data import trajectory_rows
    from flywheel_training.grpo import GRPORunConfig, train_grpo
    from flywheel_training.rft import rft_config, rft_data, train_rft
    from flywheel_training.sft import SFTRunConfig, train_sft

    config = config or TrainingConfig()
    trajectories, scores, excluded = without_simulator_failures(trajectories, scores)
    previous, out = Path(previous), Path(output_dir)
    tmp = out.with_name(out.name + ".training")
    shutil.rmtree(tmp, ignore_errors=True)
    metrics: dict[str, Any] = {}
    counts: dict[str, int] = dict(excluded)
    losses: list[float] = []
    rewards: dict[str, Any] = {}
    executed: list[dict[str, Any]] = []
    source = previous
    rft_rows = None
    for stage in plan.stages:
        dest = out.with_name(f"{out.name}.{stage.stage}")
        shutil.rmtree(dest, ignore_errors=True)
        record: dict[str, Any] = {"stage": stage.stage, "planned_steps": stage.steps}
        if stage.stage == "sft":
            wins = _teacher_wins(trajectories, scores, teacher_name)
            rows = trajectory_rows(wins, instances)
            counts.update({"teacher_trajectories": len(wins), "rows": len(rows)})
            if not rows:
                raise ValueError(f"{plan.round}: the teacher solved no instance, so the cold start has nothing to learn")
            result = train_sft(source, rows, dest, SFTRunConfig(
                learning_rate=stage.learning_rate or config.sft_learning_rate, max_steps=stage.steps,
                per_device_train_batch_size=config.batch_size, max_seconds=stage.time_cap_s, seed=config.model_seed,
                id_augment=config.id_augment), progress=progress)
            losses, metrics["sft"] = result.losses, result.to_dict()
            record.update(steps=result.steps, cut_by_time_cap=result.stopped_by_budget)
        elif stage.stage == "grpo":
            replay = [(t, s) for t, s in zip(trajectories, scores) if t.policy == policy_name]
            per_instance = Counter(t.instance_id for t, _ in replay)
            if max(per_instance.values(), default=0) < 2:
                executed.append({**record, "steps": 0, "skipped": "no instance has two policy rollouts to compare"})
                continue
            grpo = train_grpo(source, instances, dest, GRPORunConfig(
                learning_rate=stage.learning_rate or config.grpo_learning_rate, max_steps=stage.steps,
                max_seconds=stage.time_cap_s, seed=config.model_seed), replay=replay,
                progress=progress)
            rewards = {"group_reward_means": [g.mean for g in grpo.groups],
                       "group_reward_variances": [g.variance for g in grpo.groups],
                       "saturated_groups": grpo.saturated_groups, "groups": len(grpo.groups)}
            metrics["grpo"] = {k: v for k, v in grpo.to_dict().items() if k != "groups"}
            counts.update({"grpo_groups": len(grpo.groups), "grpo_saturated_groups": grpo.saturated_groups})
            record.update(steps=grpo.steps, cut_by_time_cap=grpo.stopped_by_budget)
            if grpo.steps == 0:
                shutil.rmtree(dest, ignore_errors=True)
                executed.append({**record, "skipped": "no GRPO step ran"})
                continue
        elif stage.stage == "rft":
            rft_rows = rft_data(instances, trajectories, scores, policy_name=policy_name, teacher_name=teacher_name,
                                hard_samples=hard_samples, uniform_fixes_seed=uniform_fixes_seed,
                                fix_copies=config.teacher_fix_copies, fixes_for=config.teacher_fixes_for)
            counts.update(rft_rows.counts)
            if not rft_rows.rows:
                executed.append({**record, "steps": 0, "skipped": "no policy success and no hard-sample solution"})
                continue
            result = train_rft(source, rft_rows, dest, rft_config(
                learning_rate=stage.learning_rate or config.rft_learning_rate, max_steps=stage.steps,
                per_device_train_batch_size=config.batch_size, max_seconds=stage.time_cap_s, seed=config.model_seed,
                id_augment=config.id_augment), progress=progress)
            losses, metrics["rft"] = result.losses, result.to_dict()
            record.update(steps=result.steps, cut_by_time_cap=result.stopped_by_budget)
        else:
            raise ValueError(f"unknown training stage {stage.stage!r} in the plan of {plan.round}")
        executed.append(record)
        if record.get("cut_by_time_cap") and progress:
            progress({"warning": f"{plan.round}: the {stage.stage} stage was CUT by its wall-clock safety cap "
                                 f"({stage.time_cap_s:.0f}s) after {record['steps']} of {stage.steps} steps: this "
                                 "checkpoint depends on the machine's speed"})
        if source != previous:
            shutil.rmtree(source, ignore_errors=True)
        source = dest
    ran = [r["stage"] for r in executed if not r.get("skipped")]
    kind = "+".join(ran) or "carried"
    if source == previous:
        shutil.copytree(previous, tmp)
    else:
        source.rename(tmp)
    base = read_meta(previous)
    base_sha = base.sha256 if base else folder_sha256(previous)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # the new checkpoint appears whole or not at all
    return write_meta(out, kind=kind, base_checkpoint=str(previous.resolve()), base_sha256=base_sha, round=plan.round,
                      data_counts=counts, losses=losses, rewards=rewards, metrics=metrics,
                      plan={**plan.to_dict(), "executed": executed})
