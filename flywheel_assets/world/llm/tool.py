"""The LLM mock tool: a ``ToolBackend`` whose answers a model simulates, behind the same
``TaskToolCache`` as the procedural tools.

Arguments are checked against the tool's schema before any model sees them (an invalid call
gets the same error observation as from the procedural tool). The prompt holds the tool's
schema and description, the relevant world state as JSON, this episode's earlier calls and
their responses, and the call. The model answers a JSON object::

    {"observation": <any JSON>, "error": null | "why the call fails",
     "state_change": {"<table>": {"<id>": {"<field>": <new value>}}}}

A write tool's ``state_change`` is validated (known tables; fields keeping their types;
a new record shaped like the table's others) and applied to the episode's world, so
later reads see it and the cache's version chain advances exactly as with the procedural
tool. A read tool may not change anything. An answer that breaks these rules is asked
again; after the retries the call gets an error observation marked as a tool-simulator
failure, which ends the episode and keeps it out of the training data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from flywheel_assets.world.domains.base import Domain
from flywheel_assets.world.llm.client import LLMClient, parse_json_object
from flywheel_assets.world.tasks import ToolSpec, World, canonical_json, copy_world
from flywheel_assets.world.tools import ProceduralToolBackend, ToolResult, error, validate_arguments

WORLD_CHARS = 6000
"""A world up to this size goes into the prompt whole; a larger one only with the records
that mention an argument value (and a count of every table)."""
RELATED_HOPS = 1
HISTORY_CALLS = 20
HISTORY_CHARS = 1500

OUTPUT_FORMAT = ('Answer with one JSON object and nothing else: {"observation": <the JSON the tool returns>, '
                 '"error": null or a short reason when the call cannot succeed, '
                 '"state_change": {"<table>": {"<record id>": {"<field>": <new value>}}} (only for a tool that '
                 'writes, only the fields it changes; {} or absent for a tool that only reads)}.')


def relevant_world(world: World, arguments: Mapping[str, Any], limit: int = WORLD_CHARS,
                   hops: int = RELATED_HOPS) -> dict[str, Any]:
    """The world, or for a large one the records that mention an argument value, and the
    records those mention in turn (``hops`` times: a phone number finds its line, the line
    its customer), with the size of every table."""
    if len(canonical_json(world)) <= limit:
        return world
    wanted = {str(v) for v in _scalars(arguments)}
    ids = {key for records in world.values() for key in records}
    picked: dict[str, dict[str, Any]] = {}
    for _ in range(hops + 1):
        found = False
        for table, records in world.items():
            for key, record in records.items():
                if key not in picked.get(table, {}) and (key in wanted or any(str(v) in wanted
                                                                              for v in _scalars(record))):
                    picked.setdefault(table, {})[key] = record
                    found = True
        if not found:
            break
        # Follow references only (values that are some record's id), not shared values
        # such as a status, which would pull in half the world.
        wanted |= {key for records in picked.values() for key in records}
        wanted |= {str(v) for records in picked.values() for record in records.values() for v in _scalars(record)
                   if str(v) in ids}
    return {"records": picked, "table_sizes": {table: len(records) for table, records in world.items()}}


def _scalars(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _scalars(v)]
    if isinstance(value, list):
        return [s for v in value for s in _scalars(v)]
    return [] if value is None else [value]


def _clip(text: str, limit: int = HISTORY_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def tool_prompt(domain: Domain, spec: ToolSpec, world: World, arguments: Mapping[str, Any],
                history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    system = (f"You simulate the tool {spec.name!r} of {domain.description}. Ground every answer in the world "
              "state you are given and in the earlier calls of this conversation; never invent records that are not "
              "there -- when the call cannot succeed, say why in \"error\". " + OUTPUT_FORMAT)
    earlier = [{"name": h["name"], "arguments": h["arguments"], "response": _clip(str(h["content"]))}
               for h in list(history)[-HISTORY_CALLS:]]
    request = {"tool": spec.openai_schema()["function"], "writes": spec.writes,
               "world": relevant_world(world, arguments), "earlier_calls": earlier,
               "call": {"name": spec.name, "arguments": dict(arguments)}}
    return [{"role": "system", "content": system}, {"role": "user", "content": canonical_json(request)}]


def _same_kind(old: Any, new: Any) -> bool:
    if old is None or new is None:
        return True
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, (int, float)) and isinstance(new, (int, float)):
        return True
    return type(old) is type(new)


def apply_state_change(world: World, change: Any) -> tuple[World | None, str]:
    """A copy of ``world`` with ``change`` applied, or None and the reason it is invalid."""
    if not isinstance(change, dict):
        return None, "state_change must be an object"
    new_world = copy_world(world)
    for table, records in change.items():
        if table not in new_world:
            return None, f"state_change names an unknown table {str(table)[:60]!r}"
        if not isinstance(records, dict) or not records:
            return None, f"state_change[{table!r}] must map record ids to field changes"
        rows = new_world[table]
        for key, fields in records.items():
            if not isinstance(fields, dict) or not fields:
                return None, f"state_change[{table!r}][{str(key)[:60]!r}] must be an object of field values"
            if key in rows:
                for name, value in fields.items():
                    # A write may add a field (a cancellation reason); one it has keeps its type.
                    if name in rows[key] and not _same_kind(rows[key][name], value):
                        return None, f"{table}/{key}/{name} must stay a {type(rows[key][name]).__name__}"
                    rows[key][name] = value
            else:
                shape = next(iter(rows.values()), None)
                if shape is not None and set(fields) != set(shape):
                    return None, f"a new {table} record needs exactly the fields {sorted(shape)}"
                rows[key] = fields
    return new_world, ""


class LLMToolBackend:
    """Simulates the tools of one domain with a model. ``concurrency`` tells the rollout
    runner how many episodes' calls to run at once."""

    wants_history = True

    def __init__(self, domain: Domain, client: LLMClient, output_retries: int = 2):
        self.domain = domain
        self.client = client
        self.output_retries = output_retries
        self.concurrency = client.config.concurrency

    def call(self, world: World, name: str, arguments: dict[str, Any],
             history: Sequence[Mapping[str, Any]] = ()) -> ToolResult:
        invalid = validate_arguments(self.domain, name, arguments)
        if invalid:
            return error(invalid)
        spec = self.domain.tool(name).spec
        messages = tool_prompt(self.domain, spec, world, arguments, history)
        problem = ""
        for attempt in range(self.output_retries + 1):
            completion = self.client.complete(messages, response_format={"type": "json_object"}, attempt=attempt)
            result, problem = self._interpret(completion.content, spec, world)
            if result is not None:
                return result
        return ToolResult(f"Error: the tool simulator failed ({problem})", ok=False, failure="tool")

    def _interpret(self, text: str, spec: ToolSpec, world: World) -> tuple[ToolResult | None, str]:
        answer = parse_json_object(text)
        if answer is None:
            return None, "the answer is not a JSON object"
        reason = answer.get("error")
        if reason not in (None, "", False):
            return error(_clip(str(reason), 500)), ""
        if "observation" not in answer:
            return None, "the answer has no observation"
        change = answer.get("state_change") or {}
        if not spec.writes:
            if change:
                return None, f"{spec.name} only reads but the answer changes the world"
            return ToolResult(json.dumps(answer["observation"], sort_keys=True), ok=True), ""
        if not change:
            return None, f"{spec.name} writes but the answer changes nothing"
        new_world, problem = apply_state_change(world, change)
        if new_world is None:
            return None, problem
        world.clear()
        world.update(new_world)
        return ToolResult(json.dumps(answer["observation"], sort_keys=True), ok=True, wrote=True), ""


class LLMToolBackendFactory:
    """``backend_for`` for ``make_caches`` / ``run_rollouts``: one backend per domain."""

    def __init__(self, client: LLMClient, output_retries: int = 2):
        self.client = client
        self.output_retries = output_retries
        self.concurrency = client.config.concurrency

    def __call__(self, domain: Domain) -> Any:
        if domain.from_file:
            # A domain file's: its Python tools run exactly and the rest reach this model
            # through the simulator the stage binds (``domain_files.simulated_by``).
            return ProceduralToolBackend(domain)
        return LLMToolBackend(domain, self.client, self.output_retries)
