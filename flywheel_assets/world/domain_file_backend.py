"""The tool backend of a domain file: its Python hooks run procedurally and exactly, the
other tools go to an LLM tool backend (see ``domain_files``)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from flywheel_assets.world.domain_files import DomainFile
from flywheel_assets.world.domains.base import ToolError
from flywheel_assets.world.tasks import World, copy_world
from flywheel_assets.world.tools import MAX_ARGUMENT_CHARS, ToolBackend, ToolResult, error


class DomainFileToolBackend:
    """The ``ToolBackend`` of a domain file: a tool with a Python implementation runs here,
    with ``ProceduralToolBackend``'s contract (arguments validated against the tool's schema,
    every hook on a copy of the world that replaces it only after a successful write, a
    ``ToolError`` becomes the agent's error observation). A read hook that changes the world
    is a bug in the file and fails the call as the simulator's fault. The other tools go to
    ``fallback`` (an LLM tool backend); without one, their calls fail the same way."""

    def __init__(self, domain_file: DomainFile, fallback: ToolBackend | None = None):
        self.domain_file = domain_file
        self.fallback = fallback
        self._validators = {
            t.name: jsonschema.validators.validator_for(t.parameters, default=jsonschema.Draft202012Validator)(
                t.parameters) for t in domain_file.tools}

    @property
    def wants_history(self) -> bool:
        return bool(getattr(self.fallback, "wants_history", False))

    @property
    def concurrency(self) -> int:
        return int(getattr(self.fallback, "concurrency", 1))

    def call(self, world: World, name: str, arguments: dict[str, Any],
             history: list[dict[str, Any]] | None = None) -> ToolResult:
        if name not in self._validators:
            return error(f"unknown tool {name[:80]!r}")
        if not isinstance(arguments, dict):
            return error("arguments must be a JSON object")
        if len(json.dumps(arguments)) > MAX_ARGUMENT_CHARS:
            return error(f"arguments too large (over {MAX_ARGUMENT_CHARS} characters)")
        problem = jsonschema.exceptions.best_match(self._validators[name].iter_errors(arguments))
        if problem is not None:
            at = "/".join(str(p) for p in problem.absolute_path) or "arguments"
            return error(f"invalid {at}: {problem.message[:200]}")
        hook = self.domain_file.hook(name)
        if hook is None:
            if self.fallback is None:
                return ToolResult(content=f"Error: tool {name} has no Python implementation in domain file "
                                          f"{self.domain_file.name!r}; an LLM tool backend is needed to simulate it",
                                  ok=False, failure="tool")
            if self.wants_history:
                return self.fallback.call(world, name, arguments, history=history or [])
            return self.fallback.call(world, name, arguments)
        writes = self.domain_file.tool(name).access == "write"
        target = copy_world(world)
        try:
            output = hook(target, json.loads(json.dumps(arguments)))
            content = json.dumps(output, sort_keys=True)
        except ToolError as exc:
            return error(str(exc))
        except Exception as exc:  # noqa: BLE001 (a hook bug must not end a rollout batch; it is recorded)
            return ToolResult(content=f"Error: tool {name} failed: {type(exc).__name__}", ok=False, failure="tool")
        if not writes:
            if target != world:
                return ToolResult(content=f"Error: read tool {name} changed the world; mark it access: write",
                                  ok=False, failure="tool")
            return ToolResult(content=content, ok=True)
        world.clear()
        world.update(target)
        return ToolResult(content=content, ok=True, wrote=True)
