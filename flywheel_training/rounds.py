"""One round's training, as plain functions: the checkpoint asset wraps ``train_round``.

Round 0 is the cold start: SFT of the freshly built base on the teacher's trajectories of
the instances it solved (the KEPT ones). Later rounds start from the previous checkpoint:
rejection-sampled fine-tuning on the round's successful policy trajectories plus teacher
solutions of its hard samples, then GRPO on the rubric reward over the round's own groups of
policy rollouts (replayed: the rollouts stage already played them, so no generation here).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flywheel_assets.world.tasks import Score, TaskInstance, Trajectory
from flywheel_training.checkpoints import CheckpointMeta, folder_sha256, read_meta, write_meta

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@dataclass
class RoundTrainingConfig:
    """Time budgets (seconds of training per round on the embedded model) and steps."""

    sft_seconds: float = 240.0
    sft_max_steps: int = 1200
    sft_learning_rate: float = 3e-3
    rft_seconds: float = 90.0
    rft_max_steps: int = 300
    grpo_seconds: float = 60.0
    grpo_max_steps: int = 20
    batch_size: int = 2
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def ensure_base(path: str | os.PathLike[str], seed: int = 0) -> Path:
    """The embedded base checkpoint at ``path``, built (deterministically) if absent."""
    from flywheel_training.tiny import TinyConfig, build_tiny

    path = Path(path)
    if read_meta(path) is None:
        tmp = path.with_name(path.name + ".building")
        shutil.rmtree(tmp, ignore_errors=True)
        build_tiny(tmp, TinyConfig(seed=seed))
        write_meta(tmp, kind="base")
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)  # a crash mid-build never leaves a half-written base behind
    return path


def _teacher_wins(trajectories: Sequence[Trajectory], scores: Sequence[Score], teacher_name: str) -> list[Trajectory]:
    ok = {s.trajectory_id for s in scores if s.success}
    return [t for t in trajectories if t.policy == teacher_name and t.trajectory_id in ok]


def train_round(
    round_key: str,
    previous: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    cold_start: bool,
    instances: Sequence[TaskInstance],
    trajectories: Sequence[Trajectory],
    scores: Sequence[Score],
    hard_samples: Sequence[TaskInstance],
    policy_name: str,
    teacher_name: str = "teacher",
    config: RoundTrainingConfig | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> CheckpointMeta:
    """Train this round's checkpoint from ``previous`` into ``output_dir`` and describe it."""
    from flywheel_training.data import trajectory_rows
    from flywheel_training.grpo import GRPORunConfig, train_grpo
    from flywheel_training.rft import rft_config, rft_data, train_rft
    from flywheel_training.sft import SFTRunConfig, train_sft

    config = config or RoundTrainingConfig()
    previous, out = Path(previous), Path(output_dir)
    tmp = out.with_name(out.name + ".training")
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.perf_counter()
    metrics: dict[str, Any] = {}
    counts: dict[str, int] = {}
    losses: list[float] = []
    rewards: dict[str, Any] = {}
    if cold_start:
        wins = _teacher_wins(trajectories, scores, teacher_name)
        rows = trajectory_rows(wins, instances)
        counts = {"teacher_trajectories": len(wins), "rows": len(rows)}
        if not rows:
            raise ValueError(f"{round_key}: the teacher solved no instance, so the cold start has nothing to learn")
        result = train_sft(previous, rows, tmp, SFTRunConfig(
            learning_rate=config.sft_learning_rate, max_steps=config.sft_max_steps,
            per_device_train_batch_size=config.batch_size, max_seconds=config.sft_seconds, seed=config.seed,
            **config.extra), progress=progress)
        kind, losses, metrics["sft"] = "sft", result.losses, result.to_dict()
    else:
        data = rft_data(instances, trajectories, scores, policy_name=policy_name, hard_samples=hard_samples)
        counts = dict(data.counts)
        source = previous
        kind = "carried"
        if data.rows:
            result = train_rft(previous, data, tmp, rft_config(max_steps=config.rft_max_steps,
                                                               per_device_train_batch_size=config.batch_size,
                                                               max_seconds=config.rft_seconds, seed=config.seed),
                               progress=progress)
            losses, metrics["rft"], source, kind = result.losses, result.to_dict(), tmp, "rft"
        replay = [(t, s) for t, s in zip(trajectories, scores) if t.policy == policy_name]
        grpo_out = out.with_name(out.name + ".grpo")
        shutil.rmtree(grpo_out, ignore_errors=True)
        grpo = train_grpo(source, instances, grpo_out, GRPORunConfig(
            max_steps=config.grpo_max_steps, max_seconds=config.grpo_seconds, seed=config.seed), replay=replay,
            progress=progress)
        rewards = {"group_reward_means": [g.mean for g in grpo.groups],
                   "group_reward_variances": [g.variance for g in grpo.groups],
                   "saturated_groups": grpo.saturated_groups, "groups": len(grpo.groups)}
        metrics["grpo"] = {k: v for k, v in grpo.to_dict().items() if k != "groups"}
        counts["grpo_groups"] = len(grpo.groups)
        counts["grpo_saturated_groups"] = grpo.saturated_groups
        if grpo.steps > 0:
            shutil.rmtree(tmp, ignore_errors=True)
            grpo_out.rename(tmp)
            kind = "rft+grpo" if kind == "rft" else "grpo"
        else:  # every group saturated: GRPO has no signal, keep the RFT (or previous) weights
            shutil.rmtree(grpo_out, ignore_errors=True)
            if source == previous:
                shutil.copytree(previous, tmp)
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    base = read_meta(previous)
    base_sha = base.sha256 if base else folder_sha256(previous)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # the new checkpoint appears whole or not at all
    return write_meta(out, kind=kind, base_checkpoint=str(previous.resolve()), base_sha256=base_sha, round=round_key,
                      data_counts=counts, losses=losses, rewards=rewards, metrics=metrics)


