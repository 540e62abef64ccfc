"""The round-advance sensor: when the latest round is complete, add the next round's
partition and launch it, up to a configured number of rounds. Stopped by default: turning
it on in the UI is a decision to spend compute."""

from collections.abc import Collection, Sequence

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from flywheel_assets.partitions import ROUNDS_PARTITIONS_NAME, is_round_key, round_index, round_key, rounds_partitions
from flywheel_assets.resources import RoundConfigResource

ROUND_JOB_NAME = "flywheel_round"
DATA_ROUND_JOB_NAME = "flywheel_data_round"
LAST_STAGE = AssetKey("hard_samples")
"""A round is complete when its last stage is materialised."""


def next_round(existing: Sequence[str], completed: Collection[str], max_rounds: int) -> tuple[str | None, str]:
    """The round to add and launch next (or None) and why. A partition whose name is not a
    round key (one added by hand in the UI) stops the sensor, named, until it is deleted."""
    strays = sorted(k for k in existing if not is_round_key(k))
    if strays:
        return None, (f"partitions {strays} of '{ROUNDS_PARTITIONS_NAME}' are not round keys (r000, r001, …): "
                      f"delete them in the UI (asset → Partitions) and the sensor continues")
    if not existing:
        return round_key(0), "no rounds yet: starting the flywheel"
    latest = max(existing, key=round_index)
    if latest not in completed:
        return None, f"round {latest} is not complete yet (its {LAST_STAGE.to_user_string()} is not materialised)"
    following = round_index(latest) + 1
    if following >= max_rounds:
        return None, f"round {latest} is complete and max_rounds={max_rounds} is reached"
    return round_key(following), f"round {latest} is complete"


@sensor(job_name=ROUND_JOB_NAME, default_status=DefaultSensorStatus.STOPPED, minimum_interval_seconds=30)
def round_advance_sensor(context: SensorEvaluationContext, round_config: RoundConfigResource):
    """Adds and launches the next round when the latest one is complete, up to
    ``round_config.max_rounds`` rounds (FLYWHEEL_MAX_ROUNDS)."""
    existing = context.instance.get_dynamic_partitions(ROUNDS_PARTITIONS_NAME)
    completed = context.instance.get_materialized_partitions(LAST_STAGE)
    key, reason = next_round(existing, completed, round_config.round_config().max_rounds)
    if key is None:
        return SkipReason(reason)
    context.log.info(f"launching round {key}: {reason}")
    return SensorResult(
        # the run key makes a round launch once, however often the sensor sees this state
        run_requests=[RunRequest(run_key=f"round-{key}", partition_key=key, tags={"flywheel/reason": reason})],
        dynamic_partitions_requests=[] if key in existing else [rounds_partitions.build_add_request([key])],
    )
