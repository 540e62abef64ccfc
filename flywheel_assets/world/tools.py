"""Mock tools and the task-level consistency cache.

A ``ToolBackend`` executes one call against an episode's world and returns an observation;
the procedural backend runs the domain's own tool, a later LLM backend simulates it. The
``TaskToolCache`` sits in front of any backend: within one task (all episodes played on one
instance) an identical call against an identical world state returns the identical
response, and a successful write moves the episode to a new state so later reads see it.
The cache holds a lock per task, so episodes of one task played from several threads still
see one consistent chain of versions.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

import jsonschema

from flywheel_assets.world.domains.base import Domain, SimulatorFailure, ToolError
from flywheel_assets.world.tasks import World, canonical_json, copy_world, world_hash

MAX_ARGUMENT_CHARS = 4096
"""Longer arguments are refused before any tool sees them: no real argument is that big."""

_VALIDATORS: dict[int, jsonschema.protocols.Validator] = {}


@dataclass(frozen=True)
class ToolResult:
    content: str
    ok: bool
    wrote: bool = False
    failure: str | None = None  # "tool" when the tool *simulator* failed: the episode ends, blamed on it


def error(message: str) -> ToolResult:
    return ToolResult(content=f"Error: {message}", ok=False)


class ToolBackend(Protocol):
    """Executes one call against ``world``; a write mutates ``world`` in place.

    A backend with ``wants_history = True`` is also given the episode's earlier calls
    (``history=[{"name", "arguments", "content"}, ...]``); one with ``concurrency`` asks the
    rollout runner for that many threads."""

    def call(self, world: World, name: str, arguments: dict[str, Any]) -> ToolResult: ...


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    key = id(schema)
    if key not in _VALIDATORS:
        _VALIDATORS[key] = jsonschema.Draft202012Validator(schema)
    return _VALIDATORS[key]


def validate_arguments(domain: Domain, name: str, arguments: Any) -> str | None:
    """The reason a call is invalid (unknown tool, not an object, schema violation), or None."""
    if not domain.has_tool(name):
        return f"unknown tool {name[:80]!r}"
    if not isinstance(arguments, dict):
        return "arguments must be a JSON object"
    if len(canonical_json(arguments)) > MAX_ARGUMENT_CHARS:
        return f"arguments too large (over {MAX_ARGUMENT_CHARS} characters)"
    problem = jsonschema.exceptions.best_match(_validator(domain.tool(name).spec.parameters).iter_errors(arguments))
    if problem is not None:
        where = "/".join(str(p) for p in problem.absolute_path) or "arguments"
        return f"invalid {where}: {problem.message[:200]}"
    return None


class ProceduralToolBackend:
    """Runs the domain's executable tool. Writes run on a copy that replaces the world only
    on success, so a tool that fails half-way never leaves a half-written world."""

    def __init__(self, domain: Domain):
        self.domain = domain

    def call(self, world: World, name: str, arguments: dict[str, Any]) -> ToolResult:
        invalid = validate_arguments(self.domain, name, arguments)
        if invalid:
            return error(invalid)
        tool = self.domain.tool(name)
        target = copy_world(world) if tool.spec.writes else world
        try:
            output = tool.fn(target, copy.deepcopy(arguments))
        except ToolError as exc:
            return error(str(exc))
        except SimulatorFailure as exc:
            return ToolResult(content=f"Error: {exc}", ok=False, failure="tool")
        except Exception as exc:  # a domain bug must not end a rollout batch; it is recorded
            return error(f"tool {name} failed: {type(exc).__name__}")
        if tool.spec.writes:
            world.clear()
            world.update(target)
        return ToolResult(content=json.dumps(output, sort_keys=True), ok=True, wrote=tool.spec.writes)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "errors": self.errors}


@dataclass
class _Entry:
    result: ToolResult
    post_version: str
    post_world: str | None  # for writes: the state the write leads to, replayed on a hit


class TaskToolCache:
    """One per task instance, shared by all episodes played on it.

    Entries are keyed by (tool, canonical arguments, world version). The version starts as
    the hash of the initial world and, after each successful write, becomes a hash of the
    previous version and the write, so episodes that made the same writes share a version
    and see the same responses. A hit on a write replays the recorded post-state, which is
    what keeps an LLM-simulated tool consistent as well as the procedural one.
    """

    def __init__(self, backend: ToolBackend, initial_world: World):
        self.backend = backend
        self.initial_world = initial_world
        self.initial_version = world_hash(initial_world)
        self.stats = CacheStats()
        self._entries: dict[tuple[str, str, str], _Entry] = {}
        # Held for a whole call, backend included: two episodes that miss on the same key
        # must not both ask a simulator and keep different answers.
        self.lock = threading.Lock()
        self.keeps_history = bool(getattr(backend, "wants_history", False))

    def session(self) -> "ToolSession":
        return ToolSession(self, copy_world(self.initial_world), self.initial_version)


@dataclass
class ToolSession:
    """One episode's view: its own world copy and version, the shared cache behind it."""

    cache: TaskToolCache
    world: World
    version: str
    stats: CacheStats = field(default_factory=CacheStats)
    history: list[dict[str, Any]] = field(default_factory=list)

    def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        with self.cache.lock:
            result = self._call(name, arguments)
        if self.cache.keeps_history:
            self.history.append({"name": name, "arguments": arguments, "content": result.content})
        return result

    def _call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        try:
            key = (name, canonical_json(arguments), self.version)
        except (TypeError, ValueError):
            return self._count(error("arguments are not JSON"), hit=False)
        entry = self.cache._entries.get(key)
        if entry is not None:
            if entry.post_world is not None:
                self.world.clear()
                self.world.update(json.loads(entry.post_world))
            self.version = entry.post_version
            return self._count(entry.result, hit=True)
        backend = self.cache.backend
        if self.cache.keeps_history:
            result = backend.call(self.world, name, arguments, history=list(self.history))
        else:
            result = backend.call(self.world, name, arguments)
        if result.failure:  # a simulator failure is not an answer: another episode asks again
            return self._count(result, hit=False)
        post_version, post_world = self.version, None
        if result.wrote:
            post_version = hashlib.sha256(f"{self.version}|{key[0]}|{key[1]}|{result.content}".encode()).hexdigest()[:16]
            post_world = canonical_json(self.world)
        self.cache._entries[key] = _Entry(result, post_version, post_world)
        self.version = post_version
        return self._count(result, hit=False)

    def _count(self, result: ToolResult, *, hit: bool) -> ToolResult:
        for stats in (self.stats, self.cache.stats):
            if hit:
                stats.hits += 1
            else:
                stats.misses += 1
            if not result.ok:
                stats.errors += 1
        return result
