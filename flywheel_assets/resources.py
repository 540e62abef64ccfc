"""Typed, configurable resources, derived from the settings groups (``settings.py``).

A resource's fields are generated from its group's fields (same names, types, defaults and
help), so the Dagster launchpad can never disagree with the CLI or the code. ``from_env()``
(used by ``definitions.py``) sets a field from its ``FLYWHEEL_*`` variable — as a Dagster
``EnvVar`` where Dagster has one, so the UI shows where a value came from — and run config
overrides either. ``settings()`` validates the fields into the group when a run uses them
(an EnvVar-set field holds the variable's name until then).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from flywheel_assets.external_eval import ExternalEvalSettings
from flywheel_assets.policies import EMBEDDED, PolicySettings, make_policy
from flywheel_assets.settings import (  # noqa: F401  (re-exported: the home helpers predate settings.py)
    STATE_DIR_NAME,
    WarehouseSettings,
    dagster_home,
    default_warehouse_path,
    flywheel_home,
    state_dir,
    warehouse_path,
)
from flywheel_assets.store import Warehouse
from flywheel_assets.world.pipeline import RoundConfig
from flywheel_assets.world.rollout import BatchPolicy
from flywheel_assets.world.settings import SettingsGroup
from flywheel_assets.world_roles import WorldSettings
from flywheel_training.config import TrainingConfig

if TYPE_CHECKING:  # imported where used: loading torch is for the steps that train
    from flywheel_training.tiny import TinyConfig


def settings_fields(group: type[SettingsGroup]) -> type[ConfigurableResource]:
    """A ConfigurableResource base whose fields are ``group``'s (name, type, default, help)."""
    namespace: dict[str, Any] = {"__annotations__": {"settings_group": ClassVar[type[SettingsGroup]]},
                                 "__module__": __name__, "settings_group": group}
    for spec in group.specs():
        namespace["__annotations__"][spec.name] = spec.type
        namespace[spec.name] = Field(default=spec.default, description=spec.describe())
    return type(f"{group.__name__}Fields", (ConfigurableResource,), namespace)


class _SettingsResource:
    """What every settings resource does: read the environment, validate into its group."""

    settings_group: ClassVar[type[SettingsGroup]]

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Self:
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for spec in cls.settings_group.specs():
            if not environ.get(spec.env):
                continue
            # Dagster has no float or bool EnvVar: those are read (and checked) here.
            if spec.type is str:
                values[spec.name] = EnvVar(spec.env)
            elif spec.type is int:
                values[spec.name] = EnvVar.int(spec.env)
            else:
                values[spec.name] = cls.settings_group.env_values({spec.env: environ[spec.env]})[spec.name]
        return cls(**values)  # type: ignore[call-arg]

    def settings(self):  # -> the group
        return self.settings_group.create(**{s.name: getattr(self, s.name) for s in self.settings_group.specs()})


class RoundConfigResource(settings_fields(RoundConfig), _SettingsResource):  # type: ignore[misc]
    """The round's size and world (``world/pipeline.py``'s ``RoundConfig``), the held-out set's
    size and seed, and how far the round-advance sensor may go."""


    def round_config(self) -> RoundConfig:
        return self.settings()


class PolicyResource(settings_fields(PolicySettings), _SettingsResource):  # type: ignore[misc]
    """The policy whose rollouts a round collects, and the teacher that plays beside it."""


    def policy(self) -> BatchPolicy:
        return make_policy(self.settings())

    def teacher(self) -> BatchPolicy | None:
        """The scripted teacher, or None when the policy is already a scripted teacher (its
        trajectories would collide with the teacher's: same instance, name and sample)."""
        from flywheel_assets.world.teacher import ScriptedTeacher

        return None if self.settings().kind.is_teacher else ScriptedTeacher()

    @property
    def trains(self) -> bool:
        return self.settings().kind.trains


class TrainingResource(settings_fields(TrainingConfig), _SettingsResource):  # type: ignore[misc]
    """Where checkpoints live, each round's training plan, and the held-out evaluation."""


    def checkpoints(self) -> Path:
        return Path(self.checkpoint_dir) if self.checkpoint_dir else state_dir() / "checkpoints"

    def base_config(self) -> TinyConfig:
        from flywheel_training.tiny import TinyConfig

        return TinyConfig(seed=self.model_seed, induction_steps=self.base_induction_steps,
                          recall_steps=self.base_recall_steps, hidden_size=self.base_hidden_size,
                          intermediate_size=3 * self.base_hidden_size, num_hidden_layers=self.base_layers)

    def base(self, log: Callable[[str], None] | None = None) -> Path:
        """The base checkpoint round r000 starts from: the embedded model, built
        deterministically on first use in a folder named after its config (a changed config
        builds a new base beside the old one), or the pretrained ``base_model`` converted once."""
        from flywheel_training.rounds import ensure_base
        from flywheel_training.tiny import config_digest

        self.settings()  # checks the settings together: a pretrained base refuses the embedded base's sizes
        if self.base_model:
            from flywheel_training.pretrained import ensure_pretrained_base

            return ensure_pretrained_base(self.base_model, self.checkpoints(), log=log)
        config = self.base_config()
        return ensure_base(self.checkpoints() / f"base-{config_digest(config)}", config, log=log)

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


class WarehouseResource(settings_fields(WarehouseSettings), _SettingsResource):  # type: ignore[misc]
    """The DuckDB warehouse file. Empty path: ``$FLYWHEEL_HOME/.flywheel/warehouse.duckdb``,
    resolved when a run starts (so the run's environment decides)."""


    def resolved_path(self) -> Path:
        return Path(self.path).resolve() if self.path else warehouse_path()

    def warehouse(self) -> Warehouse:
        return Warehouse(self.resolved_path())


class WorldResource(settings_fields(WorldSettings), _SettingsResource):  # type: ignore[misc]
    """Who plays the world roles: procedural (the offline default) or LLMs behind
    OpenAI-compatible endpoints (``world_roles.py``)."""


class ExternalEvalResource(settings_fields(ExternalEvalSettings), _SettingsResource):  # type: ignore[misc]
    """Which external benchmarks (BFCL-v4 multi-turn, τ²-bench) a round's checkpoint plays."""


RESOURCES: dict[str, type[_SettingsResource]] = {
    "round_config": RoundConfigResource, "policy": PolicyResource, "training": TrainingResource,
    "warehouse": WarehouseResource, "world": WorldResource, "external_eval": ExternalEvalResource,
}
"""Resource key → resource class; the same keys as ``settings.GROUPS``."""

__all__ = ["EMBEDDED", "RESOURCES", "ExternalEvalResource", "PolicyResource", "RoundConfigResource",
           "TrainingResource", "WarehouseResource", "WorldResource", "flywheel_home", "state_dir", "warehouse_path"]
