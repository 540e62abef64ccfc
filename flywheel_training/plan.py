"""What a round trains, decided in one place and returned as data.

``plan_round`` is the only function that decides: cold start or continuation, which stages
(SFT, GRPO, RFT) in which order, on which data, for how many steps at which learning rate.
The checkpoint asset executes the plan, ``flywheel run`` prints it, and the plan is recorded
in the checkpoint's metadata and in ``policy_checkpoints.plan``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from flywheel_training.config import TrainingConfig


@dataclass(frozen=True)
class StagePlan:
    stage: str  # sft | grpo | rft
    data: str  # what it trains on, in words
    steps: int  # exact optimiser steps (GRPO: at most; it makes one pass over the round's groups)
    learning_rate: float | None
    time_cap_s: float  # a safety cap only: hitting it is reported as a defect of the run


@dataclass(frozen=True)
class TrainingPlan:
    round: str
    cold_start: bool
    start_from: str  # "the built base" or "round rNNN's checkpoint"
    stages: tuple[StagePlan, ...]

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        steps = "; ".join(f"{s.stage.upper()} {'up to ' if s.stage == 'grpo' else ''}{s.steps} steps on {s.data}"
                          for s in self.stages) or "nothing (the checkpoint carries over)"
        return f"{self.round} trains from {self.start_from}: {steps}"


def plan_round(round_key: str, *, previous_round: str | None, config: TrainingConfig) -> TrainingPlan:
    """Round r000 (no previous round) is the cold start: SFT of the built base on the teacher's
    solutions. Later rounds continue from the previous round's checkpoint: GRPO on the round's
    own groups of policy rollouts first — they were played by that very checkpoint, so on it
    they are on-policy (measured: RFT then GRPO took held-out pass^1 from 0.28 to 0.08; GRPO
    then RFT to 0.36) — then RFT on the policy's successes and the teacher's solutions of the
    round's hard samples."""
    if previous_round is None:
        stages = [StagePlan("sft", f"the teacher's solutions of the round's instances (plus {config.id_augment} "
                                   "renamed-id copies of each)", config.sft_steps, config.sft_learning_rate,
                            config.sft_seconds)]
        return TrainingPlan(round_key, True, "the built base", tuple(stages))
    stages = []
    if config.grpo_steps > 0:
        stages.append(StagePlan("grpo", "the round's own groups of policy rollouts, replayed (on-policy)",
                                config.grpo_steps, config.grpo_learning_rate, config.grpo_seconds))
    if config.rft_steps > 0:
        stages.append(StagePlan("rft", f"the policy's own successes, the teacher's solutions of the instances "
                                       f"the policy failed and of the round's hard samples (plus {config.id_augment} renamed-id copies of each)",
                                config.rft_steps, config.rft_learning_rate, config.rft_seconds))
    return TrainingPlan(round_key, False, f"round {previous_round}'s checkpoint", tuple(stages))
