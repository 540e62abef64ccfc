"""Round keys ``r000``, ``r001``, …: zero-padded so that their string order is their round
order, in the UI and in SQL. No Dagster here: the warehouse and the engine use them too."""

from __future__ import annotations

import re

_ROUND_KEY = re.compile(r"^r(\d{3,})$")


def round_key(index: int) -> str:
    """``round_key(3) == "r003"``."""
    if index < 0:
        raise ValueError(f"round index must be >= 0, got {index}")
    return f"r{index:03d}"


def round_index(key: str) -> int:
    """``round_index("r003") == 3``; anything that is not a round key is a clear error."""
    match = _ROUND_KEY.match(key)
    if match is None:
        raise ValueError(f"{key!r} is not a round key (expected r000, r001, …)")
    return int(match.group(1))


def is_round_key(key: str) -> bool:
    return _ROUND_KEY.match(key) is not None


def previous_round(key: str) -> str | None:
    """The round before ``key``, or None for the first round."""
    index = round_index(key)
    return round_key(index - 1) if index > 0 else None
