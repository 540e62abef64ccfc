"""Flywheel rounds as Dagster dynamic partitions: keys ``r000``, ``r001``, …

Rounds are dynamic (not a static range) because they are added one at a time, from the UI,
the CLI or the round-advance sensor, as the flywheel turns. The key helpers live in
``round_keys`` (no Dagster), re-exported here for the Dagster side.
"""

from __future__ import annotations

from dagster import DynamicPartitionsDefinition

from flywheel_assets.round_keys import is_round_key, previous_round, round_index, round_key

ROUNDS_PARTITIONS_NAME = "rounds"
rounds_partitions = DynamicPartitionsDefinition(name=ROUNDS_PARTITIONS_NAME)

__all__ = ["ROUNDS_PARTITIONS_NAME", "is_round_key", "previous_round", "round_index", "round_key",
           "rounds_partitions"]
