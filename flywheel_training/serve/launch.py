"""Run the model server in a child process on a free loopback port (tests, benchmarks, evaluations)."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it for a socket bound to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextmanager
def serve_in_subprocess(model: str | Path, *, served_name: str | None = None, api_key_env: str | None = None,
                        extra_args: list[str] | None = None, ready_timeout_s: float = 180.0) -> Iterator[str]:
    """Run this server for ``model`` (a model folder, a ``.gguf`` file, or a named model such
    as ``smollm2``) in a child process on a free loopback port; yields the base URL
    (``http://127.0.0.1:PORT/v1``) once it answers, and stops the child on exit. For tests,
    benchmarks and evaluations that want a local OpenAI-compatible endpoint."""
    port = free_port()
    args = [sys.executable, "-m", "flywheel_training.serve", "--model", str(model), "--host", "127.0.0.1",
            "--port", str(port), *(["--served-model-name", served_name] if served_name else []),
            *(["--api-key-env", api_key_env] if api_key_env else []), *(extra_args or [])]
    base_url = f"http://127.0.0.1:{port}/v1"
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: a full pipe would block the child
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=errors)
        try:
            deadline = time.monotonic() + ready_timeout_s
            while not _answers(base_url + "/models"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    errors.seek(0)
                    tail = errors.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"the model server for {model} did not come up at {base_url} "
                                       f"(exit code {proc.poll()}):\n{tail}")
                time.sleep(0.2)
            yield base_url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # e.g. 401 without a key: the server is up
    except OSError:
        return False
