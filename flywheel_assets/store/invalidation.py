"""Which partitions become stale when one is rewritten, so that a round is never a mix of
two runs and lineage never points at rows that no longer exist.

Rewriting stage S of round r with other rows makes stale every stage of round r derived from
S (``schema.STAGE_PARENTS``) and, when round r+1 reads something that changes (round r's hard
samples or checkpoint), the stages of round r+1 that read it and everything derived from
those, and so on through the later rounds. Pure functions over the set of written (table,
round) partitions: the warehouse applies them inside its write transaction.
"""

from __future__ import annotations

from collections.abc import Iterable

from flywheel_assets.round_keys import is_round_key, round_index, round_key
from flywheel_assets.store.schema import ROUND_STAGES, downstream_stages, next_round_stale

Partition = tuple[str, str]  # (table, round)


def stale_partitions(written: Iterable[Partition], table: str, round: str) -> list[Partition]:
    """The written partitions, other than (``table``, ``round``) itself, made stale by
    rewriting ``table`` of ``round``: round order, then data-flow order."""
    written = set(written)
    if table == "eval_tasks":  # every round's evaluation measured the held-out set being replaced
        return sorted(((t, r) for t, r in written if t == "evaluations"), key=lambda p: round_index(p[1]))
    if table not in ROUND_STAGES or not is_round_key(round):
        return []
    last = max((round_index(r) for _, r in written if is_round_key(r)), default=-1)
    changed = (table, *downstream_stages(table))
    stale = [(s, round) for s in changed[1:] if (s, round) in written]
    index = round_index(round)
    changed = next_round_stale(changed)
    while changed and index < last:
        index += 1
        key = round_key(index)
        stale += [(s, key) for s in changed if (s, key) in written]
        changed = next_round_stale(changed)
    return stale


def later_rounds(stale: Iterable[Partition], round: str) -> list[str]:
    """The rounds after ``round`` that ``stale`` touches, in order."""
    index = round_index(round) if is_round_key(round) else -1
    return sorted({r for _, r in stale if is_round_key(r) and round_index(r) > index}, key=round_index)


def describe(stale: Iterable[Partition]) -> str:
    """``r001 (task_instances, rollouts), r002 (...)`` for messages."""
    by_round: dict[str, list[str]] = {}
    for table, round in stale:
        by_round.setdefault(round, []).append(table)
    return ", ".join(f"{r} ({', '.join(tables)})" for r, tables in by_round.items())
