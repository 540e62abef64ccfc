import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture
def serve() -> Iterator[Callable[..., Any]]:
    """Starts scripted OpenAI-compatible servers on loopback ports (support/llm_server.py)
    and stops them after the test."""
    from support.llm_server import ScriptedServer

    servers: list[ScriptedServer] = []

    def make(respond: Callable[[int, dict[str, Any]], Any], **kw: Any) -> ScriptedServer:
        servers.append(ScriptedServer(respond, **kw))
        return servers[-1]

    yield make
    for server in servers:
        server.close()
