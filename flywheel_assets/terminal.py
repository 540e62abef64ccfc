"""Printing model-written text to a terminal safely. Model output lands in the warehouse
as it is; shown raw, its escape sequences would drive the terminal, a NUL would cut the line
and a right-to-left override would reorder what the reader sees. The table view shows such
characters as escapes; ``--json`` output is strict JSON (no NaN or Infinity)."""

from __future__ import annotations

import json
import math
import unicodedata
from typing import Any

# ZWJ and ZWNJ stay: scripts (Persian, Indic) and emoji sequences need them
_BIDI_AND_INVISIBLE = {"\u061c", "\u200b", "\u200e", "\u200f", "\u2028", "\u2029",
                       "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2060", "\u2066", "\u2067",
                       "\u2068", "\u2069", "\ufeff"}
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def safe_text(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control characters (C0, DEL, C1), bidirectional overrides and invisible
    format characters shown as escapes; everything else, other scripts included, unchanged.
    ``keep_newlines`` for messages whose lines are meant as lines (a SQL error's context)."""
    return "".join(c if keep_newlines and c == "\n" else
                   _escape(c) if c in _BIDI_AND_INVISIBLE or unicodedata.category(c) in ("Cc", "Cs") else c
                   for c in text)


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def strict_json(value: Any) -> str:
    """Valid JSON for any row set: non-finite floats become null, other values their text."""
    return json.dumps(finite(value), ensure_ascii=False, default=str, allow_nan=False)
