"""One round's training, as plain functions: the checkpoint asset wraps ``train_round``.

Round 0 is the cold start: SFT of the freshly built base on the teacher's trajectories of
the instances it solved (the KEPT ones). Later rounds start from the previous checkpoint:
GRPO on the rubric reward over the round's own groups of policy rollouts (replayed: the
rollouts stage already played them with that checkpoint, so no generation here), then
rejection-sampled fine-tuning on the round's successful policy trajectories plus teacher
solutions of its hard samples.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flywheel_assets.world.tasks import Score, TaskInstance, Trajectory
from flywheel_training.checkpoints import CheckpointMeta, folder_sha256, read_meta, write_meta
from flywheel_training.tiny import TinyConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@dataclass
class RoundTrainingConfig:
    """Time budgets (seconds of training per round on the embedded model) and steps."""

    sft_seconds: float = 240.0
    sft_max_steps: int = 1200
    # Higher rates learn the format sooner but wipe out the copying heads of the pretrained
    # base (measured: 3e-3 left 0 of 140 held-out calls with the right arguments, 1e-3 left 88).
    sft_learning_rate: float = 1e-3
    rft_seconds: float = 90.0
    rft_max_steps: int = 300
    # renamed-id copies of each conversation (data.randomize_ids): without them the model
    # memorises its training ids (measured: right arguments in 50 of 140 held-out calls, 88 with 5)
    id_augment: int = 5
    grpo_seconds: float = 60.0
    grpo_max_steps: int = 20  # 0: no GRPO
    rft_learning_rate: float = 5e-4  # half the cold start's: continue, don't overwrite (measured 0.32 vs 0.29)
    batch_size: int = 2
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def ensure_base(path: str | os.PathLike[str], config: TinyConfig | None = None,
                log: Callable[[str], None] | None = None) -> Path:
    """The embedded base checkpoint at ``path``, built (deterministically) if absent."""
    from flywheel_training.tiny import build_tiny

    path = Path(path)
    if read_meta(path) is None:
        tmp = path.with_name(path.name + ".building")
        shutil.rmtree(tmp, ignore_errors=True)
        build_tiny(tmp, config or TinyConfig(), log=log)
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
            id_augment=config.id_augment, **config.extra), progress=progress)
        kind, losses, metrics["sft"] = "sft", result.losses, result.to_dict()
    else:
        data = rft_data(instances, trajectories, scores, policy_name=policy_name, hard_samples=hard_samples)
        counts = dict(data.counts)
        replay = [(t, s) for t, s in zip(trajectories, scores) if t.policy == policy_name]
        source, stages = previous, []

        def run_rft(start: Path) -> Path:
            nonlocal losses
            if not data.rows:
                return start
            dest = out.with_name(out.name + ".rft")
            shutil.rmtree(dest, ignore_errors=True)
            result = train_rft(start, data, dest, rft_config(
                learning_rate=config.rft_learning_rate, max_steps=config.rft_max_steps,
                per_device_train_batch_size=config.batch_size, max_seconds=config.rft_seconds, seed=config.seed,
                id_augment=config.id_augment), progress=progress)
            losses, metrics["rft"] = result.losses, result.to_dict()
            stages.append("rft")
            return dest

        def run_grpo(start: Path) -> Path:
            nonlocal rewards
            per_instance = Counter(t.instance_id for t, _ in replay)
            if config.grpo_max_steps <= 0 or max(per_instance.values(), default=0) < 2:
                return start  # off, or no group of two rollouts to compare
            dest = out.with_name(out.name + ".grpo")
            shutil.rmtree(dest, ignore_errors=True)
            grpo = train_grpo(start, instances, dest, GRPORunConfig(
                max_steps=config.grpo_max_steps, max_seconds=config.grpo_seconds, seed=config.seed), replay=replay,
                progress=progress)
            rewards = {"group_reward_means": [g.mean for g in grpo.groups],
                       "group_reward_variances": [g.variance for g in grpo.groups],
                       "saturated_groups": grpo.saturated_groups, "groups": len(grpo.groups)}
            metrics["grpo"] = {k: v for k, v in grpo.to_dict().items() if k != "groups"}
            counts["grpo_groups"] = len(grpo.groups)
            counts["grpo_saturated_groups"] = grpo.saturated_groups
            if grpo.steps == 0:  # the time budget ended before the first step: keep the weights it started from
                shutil.rmtree(dest, ignore_errors=True)
                return start
            stages.append("grpo")
            return dest

        # GRPO first: the replayed groups were played by `previous`, so on it they are on-policy.
        # After RFT they are not, and TRL (given no old log-probs) takes the ratio as 1: measured,
        # RFT then GRPO took held-out pass^1 from 0.28 to 0.08; GRPO then RFT, to 0.36.
        for stage in (run_grpo, run_rft):
            source = stage(source)
        kind = "+".join(stages) or "carried"
        if source == previous:
            shutil.copytree(previous, tmp)
        else:
            source.rename(tmp)
        for leftover in (".rft", ".grpo"):
            shutil.rmtree(out.with_name(out.name + leftover), ignore_errors=True)
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    base = read_meta(previous)
    base_sha = base.sha256 if base else folder_sha256(previous)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # the new checkpoint appears whole or not at all
    return write_meta(out, kind=kind, base_checkpoint=str(previous.resolve()), base_sha256=base_sha, round=round_key,
                      data_counts=counts, losses=losses, rewards=rewards, metrics=metrics)


