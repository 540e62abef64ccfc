"""Every settings group of a flywheel, by the Dagster resource key that carries it, and where a
flywheel's state lives (``FLYWHEEL_HOME``). No Dagster here: the CLI's engine-only verbs read it.

Each group is declared once (``world/settings.py`` explains the kit):

| resource key | group | declared in |
| --- | --- | --- |
| ``round_config`` | round size and world | ``world/pipeline.py`` (``RoundConfig``) |
| ``policy`` | rollout policy and its endpoint | ``policies.py`` (``PolicySettings``) |
| ``training`` | training plan, checkpoints, evaluation | ``flywheel_training/config.py`` (``TrainingConfig``) |
| ``warehouse`` | the DuckDB file | here (``WarehouseSettings``) |
| ``world`` | who plays the world roles (procedural, or LLM endpoints) | ``world_roles.py`` (``WorldSettings``) |
| ``external_eval`` | BFCL / τ²-bench of every round's checkpoint | ``external_eval.py`` |
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from flywheel_assets.external_eval import ExternalEvalSettings
from flywheel_assets.policies import PolicySettings
from flywheel_assets.world.pipeline import RoundConfig
from flywheel_assets.world.settings import SettingsGroup, SettingSpec, setting
from flywheel_assets.world_roles import WorldSettings
from flywheel_training.config import TrainingConfig

STATE_DIR_NAME = ".flywheel"


class WarehouseSettings(SettingsGroup):
    group: ClassVar[str] = "warehouse"

    path: str = setting("", env="FLYWHEEL_WAREHOUSE", flag="warehouse",
                        help="the DuckDB file; empty: $FLYWHEEL_HOME/.flywheel/warehouse.duckdb")


GROUPS: dict[str, type[SettingsGroup]] = {
    "round_config": RoundConfig,
    "policy": PolicySettings,
    "training": TrainingConfig,
    "warehouse": WarehouseSettings,
    "world": WorldSettings,
    "external_eval": ExternalEvalSettings,
}
"""Resource key → settings group, in the order ``flywheel settings`` and ``--help`` list them."""


def all_specs() -> list[tuple[str, SettingSpec]]:
    return [(key, spec) for key, group in GROUPS.items() for spec in group.specs()]


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


def settings_markdown() -> str:
    """The settings table of the README (``flywheel settings --markdown``)."""
    lines = ["| setting | default | environment | flag | what |", "| --- | --- | --- | --- | --- |"]
    for key, spec in all_specs():
        allowed = f"; one of: {', '.join(spec.allowed())}" if spec.choices and spec.name != "name" else ""
        lines.append(f"| `{key}.{spec.name}` | `{spec.default!r}` | `{spec.env}` | "
                     f"{f'`{spec.flag}`' if spec.flag else ''} | {spec.help.replace('|', '/')}{allowed} |")
    return "\n".join(lines)
