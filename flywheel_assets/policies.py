"""The one registry of rollout policies, and their settings.

The CLI's ``--policy`` choices, the ``policy`` resource's validation and the runner (does
this policy train? does it need its own teacher?) all read ``POLICIES``. No Dagster and no
torch here: building the embedded model is the rollouts stage's job (it depends on the
round), and the OpenAI-compatible backend is imported only when asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from flywheel_assets.world.rollout import BatchPolicy
from flywheel_assets.world.settings import SettingsGroup, setting

EMBEDDED = "embedded"
"""The trained policy: round r plays round r-1's checkpoint (r000: the freshly built base)."""


@dataclass(frozen=True)
class PolicyKind:
    name: str
    description: str
    build: Callable[["PolicySettings"], BatchPolicy] | None  # None: built per round from a checkpoint
    trains: bool = False  # complete rounds (checkpoint + evaluation) instead of data rounds
    is_teacher: bool = False  # plays the teacher's part itself: no separate teacher rollouts


def _teacher(settings: "PolicySettings") -> BatchPolicy:
    from flywheel_assets.world.teacher import ScriptedTeacher

    return ScriptedTeacher()


def _teacher_jit(settings: "PolicySettings") -> BatchPolicy:
    from flywheel_assets.world.teacher import ScriptedTeacher

    return ScriptedTeacher("just_in_time")


def _random(settings: "PolicySettings") -> BatchPolicy:
    from flywheel_assets.world.baselines import RandomPolicy

    return RandomPolicy(settings.seed)


def _do_nothing(settings: "PolicySettings") -> BatchPolicy:
    from flywheel_assets.world.baselines import DoNothingPolicy

    return DoNothingPolicy()


def _flaky(settings: "PolicySettings") -> BatchPolicy:
    from flywheel_assets.world.teacher import FlakyTeacher

    return FlakyTeacher(fail_share=settings.fail_share, seed=settings.seed)


def _openai(settings: "PolicySettings") -> BatchPolicy:
    from flywheel_training.policies.openai_compat import OpenAICompatiblePolicy

    missing = [spec.env for spec in PolicySettings.specs() if spec.name in ("base_url", "model")
               and not getattr(settings, spec.name)]
    if missing:
        raise ValueError(f"the openai policy needs {' and '.join(missing)} (policy.base_url / policy.model, "
                         f"--policy-base-url / --policy-model)")
    return OpenAICompatiblePolicy(settings.base_url, settings.model, api_key_env=settings.api_key_env,
                                  temperature=settings.temperature, max_tokens=settings.max_tokens,
                                  concurrency=settings.concurrency, timeout=settings.timeout_s,
                                  max_retries=settings.max_retries, seed=settings.seed)


POLICIES: dict[str, PolicyKind] = {p.name: p for p in (
    PolicyKind(EMBEDDED, "the trained tiny model: round r plays round r-1's checkpoint", None, trains=True),
    PolicyKind("teacher", "the scripted teacher (asks for all hidden facts first)", _teacher, is_teacher=True),
    PolicyKind("teacher-jit", "the scripted teacher asking just in time", _teacher_jit, is_teacher=True),
    PolicyKind("random", "random questions and tool calls", _random),
    PolicyKind("do-nothing", "answers without acting", _do_nothing),
    PolicyKind("flaky-teacher", "the teacher failing a share of episodes on purpose", _flaky),
    PolicyKind("openai", "a model behind an OpenAI-compatible endpoint (vllm serve, hosted APIs)", _openai),
)}


class PolicySettings(SettingsGroup):
    """The policy whose rollouts a round collects (the teacher plays beside it)."""

    group: ClassVar[str] = "policy"

    name: str = setting(EMBEDDED, env="FLYWHEEL_POLICY", flag="policy", choices=lambda: list(POLICIES),
                        help="the rollout policy: " + "; ".join(f"{k} = {v.description}" for k, v in POLICIES.items()))
    fail_share: float = setting(0.5, env="FLYWHEEL_FAIL_SHARE", ge=0, le=1,
                                help="flaky-teacher: share of episodes it fails on purpose, 0..1")
    seed: int = setting(0, env="FLYWHEEL_POLICY_SEED", flag="policy-seed",
                        help="seed of the random and flaky policies, and of endpoint sampling")
    base_url: str = setting("", env="FLYWHEEL_POLICY_BASE_URL", flag="policy-base-url",
                            help="openai: the endpoint, e.g. http://127.0.0.1:8000/v1")
    model: str = setting("", env="FLYWHEEL_POLICY_MODEL", flag="policy-model", help="openai: the served model's name")
    api_key_env: str = setting("OPENAI_API_KEY", env="FLYWHEEL_POLICY_API_KEY_ENV", flag="policy-api-key-env",
                               help="openai: the environment variable holding the key (the key itself never "
                                    "enters config)")
    temperature: float = setting(0.7, env="FLYWHEEL_POLICY_TEMPERATURE", flag="policy-temperature", ge=0,
                                 help="openai: sampling temperature")
    max_tokens: int = setting(512, env="FLYWHEEL_POLICY_MAX_TOKENS", flag="policy-max-tokens", ge=1,
                              help="openai: tokens per turn")
    concurrency: int = setting(8, env="FLYWHEEL_POLICY_CONCURRENCY", flag="policy-concurrency", ge=1,
                               help="openai: requests in flight")
    timeout_s: float = setting(120.0, env="FLYWHEEL_POLICY_TIMEOUT_S", flag="policy-timeout-s", ge=0.001,
                               help="openai: seconds per request before it counts as failed")
    max_retries: int = setting(3, env="FLYWHEEL_POLICY_MAX_RETRIES", flag="policy-max-retries", ge=0,
                               help="openai: retries of a failed request (with backoff) before the step fails")

    @property
    def kind(self) -> PolicyKind:
        return POLICIES[self.name]


def make_policy(settings: PolicySettings) -> BatchPolicy:
    """The rollout policy the settings name (not the embedded one: it depends on the round)."""
    kind = settings.kind
    if kind.build is None:
        raise ValueError("the embedded policy depends on the round: the rollouts stage loads its checkpoint")
    return kind.build(settings)
