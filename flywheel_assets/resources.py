"""Typed, configurable resources: the warehouse, the rollout policy and the round's size knobs.

Each resource has plain defaults, ``from_env()`` (used by ``definitions.py``) to take its
settings from ``FLYWHEEL_*`` environment variables — as Dagster ``EnvVar``s where Dagster
supports them, so the UI shows where a value came from — and run config overrides either.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from flywheel_assets.store import Warehouse
from flywheel_assets.world.domains import DOMAINS
from flywheel_assets.world.rollout import BatchPolicy

if TYPE_CHECKING:  # imported where used: loading torch is for the steps that train
    from flywheel_training.tiny import TinyConfig

STATE_DIR_NAME = ".flywheel"
POLICY_NAMES = ("embedded", "teacher", "teacher-jit", "random", "do-nothing", "flaky-teacher", "openai")
EMBEDDED = "embedded"
"""The trained policy: round r plays round r-1's checkpoint (r000: the freshly built base)."""


def flywheel_home() -> Path:
    """Where a flywheel's state lives: ``$FLYWHEEL_HOME``, or the current directory."""
    return Path(os.environ.get("FLYWHEEL_HOME") or ".").resolve()


def state_dir(home: Path | None = None) -> Path:
    """``<home>/.flywheel``: the warehouse, the Dagster instance and checkpoints."""
    return (home or flywheel_home()) / STATE_DIR_NAME


def dagster_home(home: Path | None = None) -> Path:
    return state_dir(home) / "dagster"


def default_warehouse_path(home: Path | None = None) -> Path:
    return state_dir(home) / "warehouse.duckdb"


def warehouse_path() -> Path:
    """The warehouse runs in this environment write: $FLYWHEEL_WAREHOUSE, or the home's default."""
    configured = os.environ.get("FLYWHEEL_WAREHOUSE")
    return Path(configured).resolve() if configured else default_warehouse_path()


def _env_str(name: str, default: str) -> str:
    return EnvVar(name) if os.environ.get(name) else default


def _env_int(name: str, default: int) -> int:
    return EnvVar.int(name) if os.environ.get(name) else default  # type: ignore[return-value]


def _env_float(name: str, default: float) -> float:
    # Dagster has no float EnvVar: read it here, with an error that names the variable
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not a number") from exc


class WarehouseResource(ConfigurableResource):
    """The DuckDB warehouse file. Empty path: ``$FLYWHEEL_HOME/.flywheel/warehouse.duckdb``,
    resolved when a run starts (so the run's environment decides)."""

    path: str = Field(default="", description="DuckDB file; empty = $FLYWHEEL_HOME/.flywheel/warehouse.duckdb")

    @classmethod
    def from_env(cls) -> "WarehouseResource":
        return cls(path=_env_str("FLYWHEEL_WAREHOUSE", ""))

    def resolved_path(self) -> Path:
        return Path(self.path).resolve() if self.path else warehouse_path()

    def warehouse(self) -> Warehouse:
        return Warehouse(self.resolved_path())


def make_policy(name: str, *, seed: int = 0, fail_share: float = 0.5, endpoint: dict | None = None) -> BatchPolicy:
    """The rollout policy by name. ``endpoint`` (base_url, model, ...) configures ``openai``."""
    from flywheel_assets.world.baselines import DoNothingPolicy, RandomPolicy
    from flywheel_assets.world.teacher import FlakyTeacher
    from flywheel_assets.world.teacher import ScriptedTeacher

    if name == "teacher":
        return ScriptedTeacher()
    if name == "teacher-jit":
        return ScriptedTeacher("just_in_time")
    if name == "random":
        return RandomPolicy(seed)
    if name == "do-nothing":
        return DoNothingPolicy()
    if name == "flaky-teacher":
        return FlakyTeacher(fail_share=fail_share, seed=seed)
    if name == "openai":
        from flywheel_training.policies.openai_compat import OpenAICompatiblePolicy

        endpoint = dict(endpoint or {})
        missing = [var for key, var in (("base_url", "FLYWHEEL_POLICY_BASE_URL"), ("model", "FLYWHEEL_POLICY_MODEL"))
                   if not endpoint.get(key)]
        if missing:
            raise ValueError(f"the openai policy needs {' and '.join(missing)} (policy.base_url / policy.model)")
        return OpenAICompatiblePolicy(endpoint.pop("base_url"), endpoint.pop("model"), seed=seed, **endpoint)
    if name == EMBEDDED:
        raise ValueError("the embedded policy depends on the round: the rollouts stage loads its checkpoint")
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")


class PolicyResource(ConfigurableResource):
    """The policy whose rollouts a round collects, and the teacher that plays beside it."""

    # Plain str, not a Literal: a field set from an EnvVar holds the variable's *name* until
    # the run resolves it, so choices are checked when the policy is built.
    name: str = Field(default=EMBEDDED, description="embedded (the trained tiny model: round r plays round r-1's "
                                                    "checkpoint), teacher, teacher-jit, random, do-nothing or "
                                                    "flaky-teacher (the teacher failing on purpose), or openai "
                                                    "(a model behind an OpenAI-compatible endpoint: vllm serve, "
                                                    "hosted APIs)")
    fail_share: float = Field(default=0.5, description="flaky-teacher: share of episodes it fails, 0..1")
    seed: int = Field(default=0, description="seed of the random and flaky policies, and of endpoint sampling")
    base_url: str = Field(default="", description="openai: the endpoint, e.g. http://127.0.0.1:8000/v1")
    model: str = Field(default="", description="openai: the served model's name")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="openai: the environment variable holding the "
                                                                   "key (the key itself never enters config)")
    temperature: float = Field(default=0.7, description="openai: sampling temperature")
    max_tokens: int = Field(default=512, description="openai: tokens per turn")
    concurrency: int = Field(default=8, description="openai: requests in flight")
    timeout_s: float = Field(default=120.0, description="openai: seconds per request before a retry")
    max_retries: int = Field(default=3, description="openai: retries of a failed request")

    @classmethod
    def from_env(cls) -> "PolicyResource":
        return cls(name=_env_str("FLYWHEEL_POLICY", EMBEDDED),
                   fail_share=_env_float("FLYWHEEL_FAIL_SHARE", 0.5),
                   seed=_env_int("FLYWHEEL_POLICY_SEED", 0),
                   base_url=_env_str("FLYWHEEL_POLICY_BASE_URL", ""),
                   model=_env_str("FLYWHEEL_POLICY_MODEL", ""),
                   api_key_env=_env_str("FLYWHEEL_POLICY_API_KEY_ENV", "OPENAI_API_KEY"),
                   temperature=_env_float("FLYWHEEL_POLICY_TEMPERATURE", 0.7),
                   max_tokens=_env_int("FLYWHEEL_POLICY_MAX_TOKENS", 512))

    def policy(self) -> BatchPolicy:
        if not 0.0 <= self.fail_share <= 1.0:
            raise ValueError(f"policy.fail_share must lie in [0, 1], got {self.fail_share} (FLYWHEEL_FAIL_SHARE)")
        endpoint = {"base_url": self.base_url, "model": self.model, "api_key_env": self.api_key_env,
                    "temperature": self.temperature, "max_tokens": self.max_tokens, "concurrency": self.concurrency,
                    "timeout": self.timeout_s, "max_retries": self.max_retries}
        return make_policy(self.name, seed=self.seed, fail_share=self.fail_share, endpoint=endpoint)

    def teacher(self) -> BatchPolicy | None:
        """The scripted teacher, or None when the policy is already a scripted teacher (its
        trajectories would collide with the teacher's: same instance, name and sample)."""
        return None if self.name in ("teacher", "teacher-jit") else make_policy("teacher")

    @property
    def trains(self) -> bool:
        return self.name == EMBEDDED


class TrainingResource(ConfigurableResource):
    """Where checkpoints live, each round's training budget, and the held-out evaluation."""

    checkpoint_dir: str = Field(default="", description="model folders; default <FLYWHEEL_HOME>/.flywheel/checkpoints")
    model_seed: int = 0
    base_induction_steps: int = Field(default=400, description="the base's synthetic pretraining: induction steps "
                                                               "(flywheel_training/pretrain.py)")
    base_recall_steps: int = Field(default=800, description="the base's synthetic pretraining: recall steps")
    sft_seconds: int = Field(default=240, description="round-0 cold-start SFT budget, seconds")
    sft_max_steps: int = 1200
    rft_seconds: int = Field(default=90, description="rejection-sampled fine-tuning budget per round, seconds")
    rft_max_steps: int = 300
    grpo_seconds: int = Field(default=60, description="GRPO budget per round, seconds")
    grpo_max_steps: int = 20
    max_new_tokens: int = Field(default=80, description="tokens the embedded policy may generate per turn (the "
                                                        "teacher's longest message is 72)")
    eval_trials: int = Field(default=4, description="k: trials per held-out task for pass^k")
    eval_max_turns: int = 12
    eval_temperature: float = Field(default=0.5, description="sampling temperature of the held-out trials (the "
                                                             "mock user is deterministic: greedy trials would all "
                                                             "be the same episode, and pass^k would equal pass^1)")
    rollout_temperature: float = Field(default=1.0, description="sampling temperature of the round's rollouts")

    @classmethod
    def from_env(cls) -> "TrainingResource":
        defaults = cls()
        return cls(checkpoint_dir=_env_str("FLYWHEEL_CHECKPOINTS", ""),
                   **{name: _env_int(f"FLYWHEEL_{name.upper()}", getattr(defaults, name))
                      for name in ("model_seed", "base_induction_steps", "base_recall_steps", "sft_seconds",
                                   "sft_max_steps", "rft_seconds", "rft_max_steps", "grpo_seconds", "grpo_max_steps",
                                   "max_new_tokens", "eval_trials", "eval_max_turns")},
                   rollout_temperature=_env_float("FLYWHEEL_ROLLOUT_TEMPERATURE", defaults.rollout_temperature),
                   eval_temperature=_env_float("FLYWHEEL_EVAL_TEMPERATURE", defaults.eval_temperature))

    def checkpoints(self) -> Path:
        return Path(self.checkpoint_dir) if self.checkpoint_dir else state_dir() / "checkpoints"

    def base_config(self) -> TinyConfig:
        from flywheel_training.tiny import TinyConfig

        return TinyConfig(seed=self.model_seed, induction_steps=self.base_induction_steps,
                          recall_steps=self.base_recall_steps)

    def base(self, log: Callable[[str], None] | None = None) -> Path:
        """The embedded base checkpoint, built deterministically on first use, in a folder
        named after its config (a changed config builds a new base beside the old one)."""
        from flywheel_training.rounds import ensure_base
        from flywheel_training.tiny import config_digest

        config = self.base_config()
        return ensure_base(self.checkpoints() / f"base-{config_digest(config)}", config, log=log)

    def round_config(self):
        from flywheel_training.rounds import RoundTrainingConfig

        return RoundTrainingConfig(sft_seconds=self.sft_seconds, sft_max_steps=self.sft_max_steps,
                                   rft_seconds=self.rft_seconds, rft_max_steps=self.rft_max_steps,
                                   grpo_seconds=self.grpo_seconds, grpo_max_steps=self.grpo_max_steps,
                                   seed=self.model_seed)

    def load_policy(self, path: Path, name: str, *, temperature: float = 0.0) -> BatchPolicy:
        """The checkpoint as a batched policy, greedy at ``temperature`` 0. The round's
        rollouts sample (``rollout_temperature``) so the rollouts of one instance differ and
        GRPO's groups carry a reward difference to learn from; the held-out trials sample
        (``eval_temperature``) so pass^k measures how reliably a task is solved."""
        from flywheel_training.policies.local import GenerationSettings, LocalTransformersPolicy

        if temperature < 0:
            raise ValueError(f"sampling temperature must be >= 0, got {temperature}")
        return LocalTransformersPolicy(path, name=name, settings=GenerationSettings(
            max_new_tokens=self.max_new_tokens, temperature=temperature, seed=self.model_seed))


# (field, environment variable, smallest allowed value) of the round's integer knobs
_ROUND_INTS = (("seed", "FLYWHEEL_SEED", None), ("tasks_per_domain", "FLYWHEEL_TASKS_PER_DOMAIN", 1),
               ("backtranslated_per_tree", "FLYWHEEL_BACKTRANSLATED_PER_TREE", 0),
               ("rollouts_per_instance", "FLYWHEEL_ROLLOUTS_PER_INSTANCE", 1), ("max_turns", "FLYWHEEL_MAX_TURNS", 1),
               ("augment_per_failure", "FLYWHEEL_AUGMENT_PER_FAILURE", 0), ("max_carried", "FLYWHEEL_MAX_CARRIED", 0),
               ("eval_per_domain", "FLYWHEEL_EVAL_PER_DOMAIN", 1), ("eval_seed", "FLYWHEEL_EVAL_SEED", None),
               ("max_rounds", "FLYWHEEL_MAX_ROUNDS", 1))


class RoundConfigResource(ConfigurableResource):
    """The size knobs of a round (``pipeline.RoundConfig``), the held-out set's size and seed,
    and how far the round-advance sensor may go. Bounds are checked when a run uses them (an
    EnvVar-set field holds a placeholder until then)."""

    seed: int = 0
    domains: str = Field(default=",".join(sorted(DOMAINS)), description="comma-separated domain packs")
    tasks_per_domain: int = 12
    backtranslated_per_tree: int = 2
    adversarial_share: float = Field(default=0.25, description="share of branched instances given an "
                                                               "adversarial user, 0..1")
    rollouts_per_instance: int = 2
    max_turns: int = Field(default=12, description="turns per episode; the teacher's longest path takes 8")
    augment_per_failure: int = 2
    max_carried: int = Field(default=160, description="at most this many of the previous round's kept hard samples "
                                                      "enter the round, spread over the failures they came from "
                                                      "(0: all)")
    hard_sample_parents: str = Field(default="failures", description="failures (the flywheel) or uniform (the "
                                                                      "efficacy control: as many parents drawn "
                                                                      "uniformly, failed or not)")
    eval_per_domain: int = Field(default=5, description="held-out tasks per domain (each also yields branched "
                                                        "and adversarial instances)")
    eval_seed: int = Field(default=900_001, description="seed of the held-out set; distinct from round seeds")
    max_rounds: int = Field(default=3, description="the round-advance sensor stops after this many rounds")

    @classmethod
    def from_env(cls) -> "RoundConfigResource":
        defaults = cls()
        return cls(domains=_env_str("FLYWHEEL_DOMAINS", defaults.domains),
                   hard_sample_parents=_env_str("FLYWHEEL_HARD_SAMPLE_PARENTS", defaults.hard_sample_parents),
                   adversarial_share=_env_float("FLYWHEEL_ADVERSARIAL_SHARE", defaults.adversarial_share),
                   **{name: _env_int(var, getattr(defaults, name)) for name, var, _ in _ROUND_INTS})

    def checked(self) -> "RoundConfigResource":
        """Itself, or a ValueError naming every knob out of bounds and its variable."""
        problems = [f"{name} must be >= {low}, got {getattr(self, name)} ({var})"
                    for name, var, low in _ROUND_INTS if low is not None and getattr(self, name) < low]
        if not 0.0 <= self.adversarial_share <= 1.0:
            problems.append(f"adversarial_share must lie in [0, 1], got {self.adversarial_share} "
                            f"(FLYWHEEL_ADVERSARIAL_SHARE)")
        if self.hard_sample_parents not in ("failures", "uniform"):
            problems.append(f"hard_sample_parents must be failures or uniform, got {self.hard_sample_parents!r} "
                            "(FLYWHEEL_HARD_SAMPLE_PARENTS)")
        if problems:
            raise ValueError("round_config: " + "; ".join(problems))
        return self

    def domain_names(self) -> tuple[str, ...]:
        names = tuple(n.strip() for n in self.domains.split(",") if n.strip())
        unknown = [n for n in names if n not in DOMAINS]
        if unknown or not names:
            raise ValueError(f"unknown domains {unknown} in {self.domains!r} (FLYWHEEL_DOMAINS); "
                             f"known: {', '.join(sorted(DOMAINS))}")
        return names

    def round_config(self):
        from flywheel_assets.world.pipeline import RoundConfig

        self.checked()
        return RoundConfig(seed=self.seed, domains=self.domain_names(), tasks_per_domain=self.tasks_per_domain,
                           backtranslated_per_tree=self.backtranslated_per_tree,
                           adversarial_share=self.adversarial_share,
                           rollouts_per_instance=self.rollouts_per_instance, max_turns=self.max_turns,
                           augment_per_failure=self.augment_per_failure, max_carried=self.max_carried,
                           hard_sample_parents=self.hard_sample_parents)
