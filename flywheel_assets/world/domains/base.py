"""What a domain pack declares: entities (a world generator), tools, a written policy, the
facts a task may hide (slots), task templates, and the conditions that branch a workflow.

A domain is data plus small pure functions; the engine (synthesis, users, tools, rubric)
is generic over it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flywheel_assets.world.tasks import ArgSource, ToolSpec, World, WorkflowStep


REPORT = "report"
"""A condition guard naming the final report itself: a read-only task's outcome may only
be told when the condition holds (another user's order status is not to be disclosed)."""


class ToolError(Exception):
    """A failed precondition inside a tool: the agent sees the message as an observation."""


ToolFn = Callable[[World, dict[str, Any]], Any]


@dataclass(frozen=True)
class Tool:
    spec: ToolSpec
    fn: ToolFn

    @property
    def name(self) -> str:
        return self.spec.name


def tool(
    name: str,
    description: str,
    properties: dict[str, dict[str, Any]],
    *,
    required: list[str] | None = None,
    writes: bool = False,
) -> Callable[[ToolFn], Tool]:
    """Declare a tool from its implementation: ``@tool("get_order", "...", {...})``."""

    def wrap(fn: ToolFn) -> Tool:
        schema = {
            "type": "object",
            "properties": properties,
            "required": list(properties) if required is None else required,
            "additionalProperties": False,
        }
        return Tool(ToolSpec(name=name, description=description, parameters=schema, writes=writes), fn)

    return wrap


@dataclass(frozen=True)
class Slot:
    """A fact the user knows and a task may hide. ``synonyms`` are the phrases an agent's
    question must contain (case-insensitive, whole words) for the mock user to reveal it;
    the first synonym is the canonical wording."""

    name: str
    synonyms: tuple[str, ...]

    @property
    def phrase(self) -> str:
        return self.synonyms[0]


def slot(name: str) -> ArgSource:
    return ArgSource(kind="slot", slot=name)


def const(value: Any) -> ArgSource:
    return ArgSource(kind="const", value=value)


def from_step(step: int, *path: Any) -> ArgSource:
    return ArgSource(kind="step", step=step, path=list(path))


def step(tool_name: str, purpose: str = "", **args: ArgSource) -> WorkflowStep:
    return WorkflowStep(tool=tool_name, args=args, purpose=purpose)


@dataclass
class TaskDraft:
    """A complete task as a template builds it: the workflow is executed against the world
    to derive the concrete expected path, so a draft whose preconditions fail is rejected.

    ``outcome`` lists the values the agent must tell the user at the end (resolved like
    workflow arguments). ``requires`` names slots the agent must learn although no tool
    argument takes them verbatim (which item to return, when it only has a name). ``context`` holds every fact of the task; the instruction phrasing
    decides which of the workflow's slots the user states up front and which stay hidden.
    """

    goal: str
    context: dict[str, Any]
    workflow: list[WorkflowStep]
    outcome: list[ArgSource]
    requires: list[str] = field(default_factory=list)
    ends_with: str = "inform"  # or "transfer"


@dataclass(frozen=True)
class TaskTemplate:
    """A task type: ``build`` picks entities in a world that make the task possible and
    returns the draft (or None when the world has no fitting entity); ``phrasings`` are
    instruction templates whose ``{placeholders}`` name context keys."""

    name: str
    build: Callable[[random.Random, World], TaskDraft | None]
    phrasings: tuple[str, ...]


@dataclass(frozen=True)
class Condition:
    """A policy condition that branches a workflow: a guarded write is allowed only when
    it holds; otherwise the agent must refuse (or transfer) and say why.

    ``check`` reads the output of ``read_tool`` (the call that lets the agent verify it) and,
    with ``needs_identity``, also the verification call's output (who the user is);
    ``falsify`` changes a world, given that read call's arguments, so the condition no
    longer holds while everything else about the task stays true; ``reason`` picks from the
    read's output the value the agent must mention when refusing. ``claim`` is what an
    adversarial user falsely asserts to push the agent past the check.
    """

    name: str
    description: str
    guards: tuple[str, ...]  # write tools, or REPORT: telling a read-only task's outcome
    read_tool: str
    check: Callable[[Any], bool]
    falsify: Callable[[random.Random, World, dict[str, Any]], None]
    reason: Callable[[Any], Any]
    claim: str
    otherwise: str = "refuse"  # or "transfer"
    needs_identity: bool = False

    def holds(self, output: Any, identity: Any) -> bool:
        return bool(self.check(output, identity) if self.needs_identity else self.check(output))


@dataclass(frozen=True)
class Domain:
    name: str
    description: str
    policy: str
    tools: tuple[Tool, ...]
    slots: tuple[Slot, ...]
    templates: tuple[TaskTemplate, ...]
    generate_world: Callable[[random.Random], World]
    verification_tools: tuple[str, ...]
    conditions: tuple[Condition, ...] = ()
    transfer_tool: str = "transfer_to_human_agents"

    def tool(self, name: str) -> Tool:
        for t in self.tools:
            if t.name == name:
                return t
        raise KeyError(name)

    def has_tool(self, name: str) -> bool:
        return any(t.name == name for t in self.tools)

    def slot(self, name: str) -> Slot:
        for s in self.slots:
            if s.name == name:
                return s
        raise KeyError(f"domain {self.name!r} has no slot {name!r}")

    def condition(self, name: str) -> Condition:
        for c in self.conditions:
            if c.name == name:
                return c
        raise KeyError(f"domain {self.name!r} has no condition {name!r}")

    def template(self, name: str) -> TaskTemplate:
        for t in self.templates:
            if t.name == name:
                return t
        raise KeyError(name)

    @property
    def tool_specs(self) -> list[ToolSpec]:
        return [t.spec for t in self.tools]

    @property
    def write_tools(self) -> set[str]:
        return {t.name for t in self.tools if t.spec.writes}

    def system_prompt(self) -> str:
        return (
            f"You are a customer service agent for {self.description}. "
            "Help the user with their request using the tools. Ask the user for any "
            "information you need; do not guess it. Follow this policy:\n\n" + self.policy
        )


def transfer_tool() -> Tool:
    """Every domain offers a hand-over to a human; calling it ends the episode."""

    @tool(
        "transfer_to_human_agents",
        "Transfer the user to a human agent, with a summary of the issue. Only when the "
        "request cannot be handled within the policy and the user asks for a human.",
        {"summary": {"type": "string", "description": "A summary of the user's issue."}},
    )
    def transfer(world: World, args: dict[str, Any]) -> Any:
        return {"status": "transferred"}

    return transfer


def pick(rng: random.Random, items: list[Any]) -> Any:
    """``rng.choice`` over a sorted copy, so the choice never depends on dict order."""
    return rng.choice(sorted(items, key=str)) if items else None


def money(value: float) -> float:
    return round(float(value) + 0.0, 2)
