"""`flywheel mcp serve` as a real server process, driven by the `mcp` SDK's client: over
stdio and streamable HTTP, a write changes what later reads return."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from flywheel_assets.cli_domain import main as domain_cli
from flywheel_assets.mcp_serve import seed_instance
from flywheel_assets.store import Warehouse
from flywheel_assets.store.rows import instance_rows
from flywheel_assets.world.domain_files import load_domain_file, summary
from flywheel_assets.world.domains import get_domain
from flywheel_assets.world.tasks import TaskInstance

ROOT = Path(__file__).resolve().parents[1]
SERVE = [sys.executable, "-m", "flywheel_assets.cli_domain", "mcp", "serve"]


def server_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FLYWHEEL_HOME", "FLYWHEEL_WAREHOUSE")}
    return {**env, **extra}


def stdio(*flags: str, **env: str) -> StdioServerParameters:
    return StdioServerParameters(command=SERVE[0], args=[*SERVE[1:], *flags], cwd=str(ROOT), env=server_env(**env))


def seed_with_a_write(domain: str) -> tuple[int, TaskInstance]:
    """The first round seed whose first seed instance of ``domain`` writes (a read-only task
    would leave nothing for a later read to see)."""
    for seed in range(50):
        instance = seed_instance(domain, seed)
        if any(s.tool in get_domain(domain).write_tools for s in instance.expected_path if s.action == "call"):
            return seed, instance
    raise AssertionError(f"no seed of {domain} gives a task that writes")


def read_write_read(instance: TaskInstance) -> tuple[tuple[str, dict], tuple[str, dict]]:
    """From the instance's expected path: its first write, and the read before it that
    looks at what the write changes (same arguments but for the write's own extras)."""
    domain = get_domain(instance.domain)
    calls = [s for s in instance.expected_path if s.action == "call"]
    write_index = next(i for i, s in enumerate(calls) if s.tool in domain.write_tools)
    write_values = list(calls[write_index].args.values())
    read = next(s for s in reversed(calls[:write_index])
                if s.tool not in domain.write_tools and any(v in write_values for v in s.args.values()))
    return (read.tool, read.args), (calls[write_index].tool, calls[write_index].args)


async def exercise(server: Any, instance: TaskInstance) -> dict[str, Any]:
    """List the tools, read, write, read again: what the client saw."""
    (read_tool, read_args), (write_tool, write_args) = read_write_read(instance)
    async with Client(server) as client:
        listed = await client.list_tools()
        before = await client.call_tool(read_tool, read_args)
        wrote = await client.call_tool(write_tool, write_args)
        after = await client.call_tool(read_tool, read_args)
        unknown = await client.call_tool("no_such_tool", {})
        instructions = client.instructions
    return {"tools": {t.name: t.annotations.read_only_hint for t in listed.tools}, "before": before, "wrote": wrote,
            "after": after, "unknown": unknown, "instructions": instructions}


def assert_world_persists(seen: dict[str, Any], instance: TaskInstance) -> None:
    domain = get_domain(instance.domain)
    assert seen["tools"] == {s.name: not s.writes for s in domain.tool_specs}
    assert seen["instructions"] == domain.system_prompt()
    assert not seen["before"].is_error and not seen["wrote"].is_error and not seen["after"].is_error
    before, after = (json.loads(seen[k].content[0].text) for k in ("before", "after"))
    assert before != after  # the write reached the later read
    assert seen["after"].structured_content == after
    assert seen["unknown"].is_error and "unknown tool" in seen["unknown"].content[0].text


def test_a_seed_instance_over_stdio_keeps_its_world_across_calls():
    seed, instance = seed_with_a_write("retail")
    assert_world_persists(anyio.run(exercise, stdio("--domain", "retail", "--seed", str(seed)), instance), instance)


def test_an_instance_from_the_warehouse_is_served_by_id(tmp_path: Path):
    _, instance = seed_with_a_write("telecom")
    store = Warehouse(tmp_path / ".flywheel" / "warehouse.duckdb")
    store.ensure_schema()
    store.replace_round("task_instances", "r000", instance_rows([instance]))
    seen = anyio.run(exercise, stdio("--instance", instance.instance_id, "--home", str(tmp_path)), instance)
    assert_world_persists(seen, instance)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_server() -> Iterator[tuple[str, TaskInstance]]:
    seed, instance = seed_with_a_write("banking")
    port = free_port()
    process = subprocess.Popen([*SERVE, "--domain", "banking", "--seed", str(seed), "--http", "--port", str(port)],
                               cwd=ROOT, env=server_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:  # readiness, not a timing assertion: the port accepts once uvicorn is up
            if process.poll() is not None:
                pytest.fail(f"the server exited: {process.stderr.read().decode()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the HTTP server did not start within 120 s")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/mcp", instance
    finally:
        os.kill(process.pid, 15)
        process.wait(timeout=30)
        process.stderr.close()


def test_streamable_http_on_localhost_keeps_its_world_across_calls(http_server: tuple[str, TaskInstance]):
    url, instance = http_server
    assert_world_persists(anyio.run(exercise, url, instance), instance)


def test_a_served_world_imports_back_with_its_reads_and_writes(tmp_path: Path):
    out = tmp_path / "retail_copy.yaml"
    command = shlex.join([*SERVE, "--domain", "retail"])
    assert domain_cli(["domain", "import", "--mcp", command, "--out", str(out), "--name", "retail_copy"]) == 0
    facts = summary(load_domain_file(out))
    domain = get_domain("retail")
    assert set(facts["writes"]) == domain.write_tools
    assert set(facts["reads"]) == {s.name for s in domain.tool_specs} - domain.write_tools


def test_a_domain_file_is_served_on_its_hooks():
    async def session() -> tuple[Any, Any, Any]:
        async with Client(stdio("--domain-file", "examples/domains/it_helpdesk.yaml")) as client:
            opened = await client.call_tool("open_ticket", {"employee_id": "E5101", "category": "network",
                                                            "summary": "VPN drops", "priority": "normal"})
            ticket_id = json.loads(opened.content[0].text)["ticket_id"]
            read = await client.call_tool("get_ticket", {"ticket_id": ticket_id})
            simulated = await client.call_tool("reset_password", {"employee_id": "E5101"})
            return opened, read, simulated

    opened, read, simulated = anyio.run(session)
    assert json.loads(read.content[0].text) == json.loads(opened.content[0].text)
    assert simulated.is_error and "LLM tool backend" in simulated.content[0].text


@pytest.mark.parametrize("flags, message", [
    (["--domain", "no_such_domain"], "unknown domain 'no_such_domain'"),
    (["--instance", "inst-missing"], "no warehouse at"),
    (["--domain", "retail", "--domain-file", "x.yaml"], "give exactly one of"),
    (["--domain-file", "no/such/file.yaml"], "cannot read"),
])
def test_a_world_that_cannot_be_served_is_one_line_and_exit_2(flags: list[str], message: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))  # --home sets it; restored after the test
    monkeypatch.delenv("FLYWHEEL_WAREHOUSE", raising=False)
    assert domain_cli(["mcp", "serve", "--home", str(tmp_path), *flags]) == 2
    assert message in capsys.readouterr().err


def test_the_server_in_process_validates_arguments_and_replays_identical_calls():
    from flywheel_assets.mcp_serve import build_server, domain_file_world

    served = domain_file_world(ROOT / "examples" / "domains" / "insurance_claims.yaml")

    async def session() -> list[Any]:
        async with Client(build_server(served)) as client:
            args = {"email": "maria.lopez@example.com", "date_of_birth": "1984-03-17"}
            return [await client.call_tool("verify_policyholder", args),
                    await client.call_tool("verify_policyholder", args),
                    await client.call_tool("get_policy", {"policy": "POL2001"})]

    first, second, invalid = anyio.run(session)
    assert json.loads(first.content[0].text)["policyholder_id"] == "PH1001"
    assert second.content[0].text == first.content[0].text
    assert served.session.stats.as_dict() == {"hits": 1, "misses": 2, "errors": 1}
    assert invalid.is_error and invalid.content[0].text.startswith("Error: invalid arguments")
