"""The one place that wires the flywheel's assets, checks, job, sensor and resources.

Resources take their settings from ``FLYWHEEL_*`` environment variables (see
``resources.py``); ``workspace.yaml`` and ``[tool.dg]`` in ``pyproject.toml`` point here.
"""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from flywheel_assets.assets import DATA_ASSETS, ROUND_ASSETS, eval_tasks
from flywheel_assets.checks import ASSET_CHECKS
from flywheel_assets.resources import RESOURCES
from flywheel_assets.sensors import DATA_ROUND_JOB_NAME, ROUND_JOB_NAME, round_advance_sensor

round_job = define_asset_job(
    ROUND_JOB_NAME,
    selection=AssetSelection.assets(*ROUND_ASSETS),  # their checks come with them; partitioned by round like them
    description="One complete flywheel round: seed tasks → behaviour trees → instances → rollouts → rubric "
                "scores → hard samples → policy checkpoint → evaluation. Reads the previous round's hard samples "
                "and checkpoint from the warehouse.",
)

data_round_job = define_asset_job(
    DATA_ROUND_JOB_NAME,
    selection=AssetSelection.assets(*DATA_ASSETS),
    description="A round's data stages only (seed tasks … hard samples): for scripted policies, which "
                "have no checkpoint to train.",
)

eval_tasks_job = define_asset_job("held_out_eval_tasks", selection=AssetSelection.assets(eval_tasks),
                                  description="The fixed held-out evaluation instances.")


def build_definitions() -> Definitions:
    """The definitions with resources read from the environment now."""
    return Definitions(
        assets=[*ROUND_ASSETS, eval_tasks],
        asset_checks=ASSET_CHECKS,
        jobs=[round_job, data_round_job, eval_tasks_job],
        sensors=[round_advance_sensor],
        # A round's stages form a chain and each is seconds of work: in one process they run
        # without paying the package import (several seconds) once per step.
        executor=in_process_executor,
        # one resource per settings group (settings.GROUPS), each read from its FLYWHEEL_* variables
        resources={key: resource.from_env() for key, resource in RESOURCES.items()},
    )


defs = build_definitions()
