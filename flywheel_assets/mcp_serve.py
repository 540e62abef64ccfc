"""Any Mock World as an MCP server, so an outside agent framework can be tested against it.

One server process serves one world: a task instance from the warehouse, the first seed
instance of a built-in domain, or a domain file's seed records. Every call goes through a
``TaskToolCache`` session over the world's tool backend, so the world persists across the
calls the server receives (a write changes what later reads return) and an identical call
in an identical state gets the identical answer. Restart the server for a fresh world.
Transports: stdio, or streamable HTTP on 127.0.0.1 only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server

from flywheel_assets.world.tasks import TaskInstance, ToolSpec
from flywheel_assets.world.tools import TaskToolCache, ToolBackend, ToolSession

HOST = "127.0.0.1"


class ServeError(ValueError):
    """The world to serve cannot be found or loaded."""


@dataclass
class ServedWorld:
    name: str
    instructions: str
    """The agent's system prompt (domain and policy), sent as the server's instructions."""
    specs: list[ToolSpec]
    session: ToolSession
    about: str
    """One line for the operator: what is served (and, for an instance, the user's request)."""


def _served(name: str, instructions: str, specs: list[ToolSpec], backend: ToolBackend, world: dict, about: str
            ) -> ServedWorld:
    return ServedWorld(name, instructions, specs, TaskToolCache(backend, world).session(), about)


def instance_world(instance: TaskInstance) -> ServedWorld:
    """A task instance of a built-in domain, on its procedural tools."""
    from flywheel_assets.world.domains import get_domain
    from flywheel_assets.world.tools import ProceduralToolBackend

    try:
        domain = get_domain(instance.domain)
    except KeyError as exc:
        raise ServeError(str(exc.args[0])) from None
    return _served(f"flywheel-{domain.name}", domain.system_prompt(), domain.tool_specs, ProceduralToolBackend(domain),
                   instance.initial_world, f"instance {instance.instance_id} ({domain.name}); the user's request: "
                                           f"{instance.instruction}")


def load_instance(warehouse_path: Path, instance_id: str) -> TaskInstance:
    from flywheel_assets.store import Warehouse, WarehouseError

    if not warehouse_path.exists():
        raise ServeError(f"no warehouse at {warehouse_path} (set --home or FLYWHEEL_HOME)")
    try:
        rows = Warehouse(warehouse_path).records(
            "SELECT instance FROM task_instances WHERE instance_id = $id LIMIT 1", {"id": instance_id})
    except WarehouseError as exc:
        raise ServeError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 (duckdb: no such table in a fresh warehouse)
        raise ServeError(f"cannot read task instances from {warehouse_path}: {exc}") from None
    if not rows:
        raise ServeError(f"no task instance {instance_id!r} in {warehouse_path}")
    return TaskInstance.from_dict(rows[0]["instance"])


def seed_instance(domain: str, seed: int) -> TaskInstance:
    """The first seed instance a round with this seed would play in ``domain``."""
    from flywheel_assets.world.domains import DOMAINS
    from flywheel_assets.world.synthesis import seed_instances

    if domain not in DOMAINS:
        raise ServeError(f"unknown domain {domain!r}; known: {', '.join(sorted(DOMAINS))}")
    return seed_instances([domain], 1, seed=seed, round_key="r000").instances[0]


def domain_file_world(path: str | Path) -> ServedWorld:
    """A domain file's seed records, on its Python hooks (other tools fail as unsimulated)."""
    from flywheel_assets.world.domain_file_backend import DomainFileToolBackend
    from flywheel_assets.world.domain_files import DomainFileError, load_domain_file

    try:
        domain_file = load_domain_file(path)
    except DomainFileError as exc:
        raise ServeError(str(exc)) from None
    instructions = (f"You are a customer service agent for {domain_file.description or domain_file.name}. "
                    f"Follow this policy:\n\n{domain_file.policy}")
    return _served(f"flywheel-{domain_file.name}", instructions, domain_file.to_tool_specs(),
                   DomainFileToolBackend(domain_file), domain_file.world(), f"domain file {path}")


def build_server(served: ServedWorld) -> Server[Any]:
    """The MCP server of one world: its tools (a read carries readOnlyHint=true), each call
    answered by the world's tool session."""
    tools = [types.Tool(name=spec.name, description=spec.description, input_schema=spec.parameters,
                        annotations=types.ToolAnnotations(read_only_hint=not spec.writes,
                                                          destructive_hint=spec.writes or None))
             for spec in served.specs]

    async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        # In a worker thread: an LLM tool backend may take seconds; the session holds its own lock
        result = await anyio.to_thread.run_sync(served.session.call, params.name, dict(params.arguments or {}))
        structured = None
        if result.ok:
            output = json.loads(result.content)
            structured = output if isinstance(output, dict) else None
        return types.CallToolResult(content=[types.TextContent(type="text", text=result.content)],
                                    structured_content=structured, is_error=not result.ok)

    return Server(served.name, instructions=served.instructions, on_list_tools=list_tools, on_call_tool=call_tool)


async def serve_stdio(served: ServedWorld) -> None:
    from mcp.server.stdio import stdio_server

    server = build_server(served)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


async def serve_http(served: ServedWorld, port: int) -> None:
    """Streamable HTTP at ``http://127.0.0.1:PORT/mcp`` until cancelled or signalled."""
    import uvicorn

    app = build_server(served).streamable_http_app(host=HOST)
    await uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level="warning")).serve()
