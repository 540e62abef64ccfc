"""Which checkpoint a round plays: round r uses round r-1's ``policy_checkpoint``, read
through the warehouse (Dagster cannot declare an edge to the previous partition), and round
r000 the freshly built base. A missing previous checkpoint fails at once, naming it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dagster import Failure

from flywheel_assets.partitions import previous_round
from flywheel_assets.resources import PolicyResource, TrainingResource
from flywheel_assets.store import Warehouse
from flywheel_assets.world.rollout import BatchPolicy
from flywheel_training.checkpoints import verify


def checkpoint_for_round(store: Warehouse, round_key: str, training: TrainingResource,
                         log: Callable[[str], None] | None = None) -> tuple[Path, str | None]:
    """(model folder, checkpoint id) the round starts from; the id is None for the base
    (built on first use: ``log`` receives the progress of its pretraining)."""
    previous = previous_round(round_key)
    if previous is None:
        return training.base(log), None
    if not store.is_written("policy_checkpoints", previous):
        raise Failure(description=(
            f"round {round_key} plays round {previous}'s checkpoint, but partition {previous} of policy_checkpoint "
            f"has not been materialised in {store.path}. Materialise round {previous} first."))
    row = store.read_round("policy_checkpoints", previous)[0]
    path = Path(row["path"])
    if not verify(path):
        raise Failure(description=f"checkpoint {row['checkpoint_id']} of round {previous} at {path} is missing or "
                                  "its files no longer match their sha256; re-materialise that round's policy_checkpoint")
    return path, row["checkpoint_id"]


def round_policy(store: Warehouse, round_key: str, policy: PolicyResource, training: TrainingResource,
                 log: Callable[[str], None] | None = None) -> BatchPolicy:
    """The policy whose rollouts the round collects."""
    if not policy.trains:
        return policy.policy()
    path, checkpoint_id = checkpoint_for_round(store, round_key, training, log)
    return training.load_policy(path, f"embedded:{(checkpoint_id or 'base')[:12]}",
                               temperature=training.rollout_temperature)
