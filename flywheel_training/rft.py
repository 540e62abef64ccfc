"""Rejection-sampled fine-tuning (rounds >= 1): SFT on what worked.

The data is the round's successful policy trajectories (rejection sampling: of the
policy's own rollouts, keep those the rubric passes), the teacher's solutions of this
round's instances the policy failed, and the teacher's solutions of the hard samples (the
verified, harder variants of what the policy failed). Training starts from the previous
round's checkpoint and reuses the SFT trainer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flywheel_assets.world.rollout import BatchPolicy, run_rollouts
from flywheel_assets.world.rubric import score
from flywheel_assets.world.tasks import Score, TaskInstance, Trajectory, seeded_draw
from flywheel_training.config import TEACHER_FIXES_FOR
from flywheel_training.data import successful, trajectory_rows
from flywheel_training.sft import SFTRunConfig, TrainResult, train_sft


def rft_config(**overrides: Any) -> SFTRunConfig:
    """SFT settings for continuing from a trained checkpoint: a lower learning rate than the
    cold start (the model already knows the format; a high rate would undo it)."""
    return SFTRunConfig(**{"learning_rate": 1e-3, "num_train_epochs": 2.0, "warmup": 0.0, **overrides})


@dataclass
class RFTData:
    rows: list[dict[str, Any]]
    counts: dict[str, int] = field(default_factory=dict)


def rft_data(
    instances: Sequence[TaskInstance],
    trajectories: Sequence[Trajectory],
    scores: Sequence[Score],
    *,
    policy_name: str,
    teacher_name: str | None = None,
    hard_samples: Sequence[TaskInstance] = (),
    teacher: BatchPolicy | None = None,
    teacher_trajectories: Sequence[Trajectory] = (),
    max_turns: int = 30,
    uniform_fixes_seed: str | None = None,
    fix_copies: int = 1,
    fixes_for: str = "any_failure",
) -> RFTData:
    """Rows for one round of rejection-sampled fine-tuning, with counts for the metadata.

    Teacher solutions of the hard samples are taken from ``teacher_trajectories`` when
    given, else played here with ``teacher`` (the scripted teacher by default); only those
    the rubric passes are kept. With ``teacher_name``, the teacher's successful rollouts of the
    instances the policy failed at least once are added (the worked answer to a real failure).
    With ``uniform_fixes_seed`` (the efficacy benchmark's ``uniform-all`` control), as many of the
    teacher's successful rollouts are added, of instances drawn uniformly (seeded), failed or not.
    Each of these teacher solutions enters the rows ``fix_copies`` times. ``fixes_for`` says
    which instances count as failed here: ``any_failure`` (a failed rollout) or
    ``every_rollout_failed`` (no rollout solved it); the uniform draw takes as many. With
    ``every_instance_weighted`` the teacher's solutions of every instance enter once, and those
    of the instances no rollout solved (the control: as many drawn uniformly) once more.
    """
    if fixes_for not in TEACHER_FIXES_FOR:
        raise ValueError(f"fixes_for must be one of {', '.join(TEACHER_FIXES_FOR)}, not {fixes_for!r}")
    wins = successful(trajectories, scores, policy=policy_name)
    fixes: list[Trajectory] = []
    policy_of = {t.trajectory_id: t.policy for t in trajectories}
    own = [s for s in scores if policy_of.get(s.trajectory_id) == policy_name]
    failed = {s.instance_id for s in own if not s.success}
    if fixes_for in ("every_rollout_failed", "every_instance_weighted"):
        failed -= {s.instance_id for s in own if s.success}
    if teacher_name is not None:
        solved = successful(trajectories, scores, policy=teacher_name)
        fixes = [t for t in solved if t.instance_id in failed]
        if uniform_fixes_seed is not None:
            drawn = set(seeded_draw(uniform_fixes_seed, (t.instance_id for t in solved),
                                    len({t.instance_id for t in fixes})))
            fixes = [t for t in solved if t.instance_id in drawn]
        if fixes_for == "every_instance_weighted":
            # the aim is a weight, not a cut: every solution once, the aimed ones once more
            fixes = solved + fixes
    hard_solutions: list[Trajectory] = []
    if hard_samples:
        by_id = {i.instance_id: i for i in hard_samples}
        played = [t for t in teacher_trajectories if t.instance_id in by_id]
        if not played:
            if teacher is None:
                from flywheel_assets.world.teacher import ScriptedTeacher

                teacher = ScriptedTeacher()
            played = run_rollouts(list(hard_samples), teacher, max_turns=max_turns)
        hard_solutions = [t for t in played if score(by_id[t.instance_id], t).success]
    every = list(instances) + list(hard_samples)
    rows = (trajectory_rows(wins, every) + trajectory_rows(fixes, every) * fix_copies
            + trajectory_rows(hard_solutions, every))
    # of_failures: how many of the teacher's solutions answer one of the policy's failures (all
    # of them, but for the uniform-all control, whose draw also takes what the policy solved)
    counts = {"policy_successes": len(wins), "teacher_fixes": len(fixes),
              "teacher_fixes_of_failures": sum(t.instance_id in failed for t in fixes),
              "hard_sample_solutions": len(hard_solutions),
              "hard_samples": len(hard_samples), "rows": len(rows)}
    return RFTData(rows, counts)


def train_rft(
    model_path: str | os.PathLike[str],
    data: RFTData,
    output_dir: str | os.PathLike[str],
    config: SFTRunConfig | None = None,
    *,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Fine-tune the previous checkpoint on ``data``; raises when there is nothing to learn
    from (the caller decides whether to carry the checkpoint over unchanged)."""
    if not data.rows:
        raise ValueError("rejection-sampled fine-tuning has no rows: no policy success and no hard-sample solution")
    return train_sft(model_path, data.rows, output_dir, config or rft_config(), progress=progress)
