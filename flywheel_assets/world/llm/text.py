"""Text hygiene for everything a model writes and everything we print about an endpoint.

``clean_text`` makes model output safe to put back into a conversation: a lone UTF-16
surrogate (``"hello \\ud83d there"``, which JSON can carry) cannot be encoded as UTF-8, so
the *next* request would fail inside the HTTP client before it is sent. A malformed reply
is an observation like any other, so it is repaired where it enters the conversation.

``redact`` removes every configured API key and any ``Bearer ...`` token from text bound
for an error message, a log line or metadata: servers echo keys back in 401 bodies.
"""

from __future__ import annotations

import re
import threading
from typing import Any

REPLACEMENT = "\ufffd"
_BEARER = re.compile(r"(Bearer\s+)[^\s'\",;]+", re.IGNORECASE)
MIN_SECRET_CHARS = 6
"""Shorter "keys" (placeholders such as EMPTY) are not redacted: they would mangle ordinary words."""

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def clean_text(text: str) -> str:
    """``text`` with surrogate pairs joined and lone surrogates replaced by U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        # UTF-16 with surrogatepass joins valid pairs; decoding with "replace" turns what is
        # left alone into U+FFFD.
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def clean_json(value: Any) -> Any:
    """``value`` (parsed JSON) with every string, keys included, passed through ``clean_text``."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(k) if isinstance(k, str) else k: clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_json(v) for v in value]
    return value


def register_secret(value: str | None) -> None:
    """Remember a key read from the environment so that ``redact`` removes it everywhere."""
    if value and len(value) >= MIN_SECRET_CHARS:
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str, extra: tuple[str, ...] = ()) -> str:
    """``text`` without any registered key, any of ``extra``, or any ``Bearer`` token."""
    with _secrets_lock:
        secrets = sorted(_secrets | {s for s in extra if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "[REDACTED]")
    return _BEARER.sub(r"\1[REDACTED]", text)
