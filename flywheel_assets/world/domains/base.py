"""What a domain pack declares: entities (a world generator), tools, a written policy, the
facts a task may hide (slots), task templates, and the conditions that branch a workflow.

A domain is data plus small pure functions; the engine (synthesis, users, tools, rubric)
is generic over it.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from flywheel_assets.world.tasks import ArgSource, ToolSpec, World, WorkflowStep


REPORT = "report"
"""A condition guard naming the final report itself: a read-only task's outcome may only
be told when the condition holds (another user's order status is not to be disclosed)."""


class ToolError(Exception):
    """A failed precondition inside a tool: the agent sees the message as an observation."""


class SimulatorFailure(RuntimeError):
    """The tool side failed (an LLM-simulated tool with no working simulator): the episode
    ends blamed on the tool simulator, not the agent."""


ToolFn = Callable[[World, dict[str, Any]], Any]


@dataclass(frozen=True)
class Tool:
    spec: ToolSpec
    fn: ToolFn

    @property
    def name(self) -> str:
        return self.spec.name


JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def tool(
    name: str,
    description: str,
    properties: dict[str, dict[str, Any] | type],
    *,
    required: list[str] | None = None,
    writes: bool = False,
) -> Callable[[ToolFn], Tool]:
    """Declare a tool from its implementation: ``@tool("get_order", "...", {"order_id": str})``.
    A property is a JSON schema, or a plain ``str``/``int``/``float``/``bool`` for that type
    alone. Every property is required unless ``required`` says otherwise."""
    schema_properties = {k: {"type": JSON_TYPES[v]} if isinstance(v, type) else v for k, v in properties.items()}

    def wrap(fn: ToolFn) -> Tool:
        schema = {
            "type": "object",
            "properties": schema_properties,
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


def open_slot(name: str) -> Slot:
    """A fact named by an LLM-written task: ``claim_id`` is asked for as "claim id", "claim
    number" or "claim"; ``date_of_birth`` as "date of birth"."""
    words = name.replace("_", " ").strip()
    synonyms = [words]
    for suffix in (" id", " number", " code"):
        if words.endswith(suffix) and len(words) > len(suffix):
            stem = words[: -len(suffix)]
            synonyms += [f"{stem} {other}" for other in ("number", "id") if other != suffix.strip()] + [stem]
            break
    return Slot(name, tuple(dict.fromkeys(synonyms)))


def slot(name: str) -> ArgSource:
    """The value of a fact the user knows (a key of the draft's context, declared as a Slot)."""
    return ArgSource(kind="slot", slot=name)


def const(value: Any) -> ArgSource:
    """A fixed value, copied into every draft that uses it."""
    return ArgSource(kind="const", value=value)


@dataclass(frozen=True)
class StepRef:
    """A field of an earlier step's output, by the step's name: resolved to a positional
    ``ArgSource`` when the draft is built, so inserting a step never shifts a reference."""

    name: str
    path: tuple[Any, ...] = ()


def from_step(name: str, *path: Any) -> StepRef:
    """``from_step("get_order_details", "status")``: a key path into the output of the step
    named ``name`` (a step's name is its tool's name unless ``.named(...)`` gave it another)."""
    if not isinstance(name, str):
        raise TypeError(f"from_step takes a step name, not a position ({name!r}): positions shift when a step "
                        "is inserted")
    return StepRef(name, path)


Source = ArgSource | StepRef


@dataclass(frozen=True)
class DraftStep:
    """A workflow step as a template writes it; ``TaskDraft`` turns it into a ``WorkflowStep``."""

    tool: str
    purpose: str
    args: dict[str, Source]
    name: str

    def named(self, name: str) -> "DraftStep":
        """The same step under another name (needed only when a workflow calls one tool twice)."""
        return replace(self, name=name)


def step(tool_name: str, purpose: str = "", **args: Source) -> DraftStep:
    return DraftStep(tool=tool_name, purpose=purpose, args=args, name=tool_name)


def _fresh(source: ArgSource) -> ArgSource:
    return ArgSource(kind=source.kind, slot=source.slot, value=copy.deepcopy(source.value), step=source.step,
                     path=list(source.path))


@dataclass
class TaskDraft:
    """A complete task as a template builds it: the workflow is executed against the world
    to derive the concrete expected path, so a draft whose preconditions fail is rejected.

    ``outcome`` lists the values the agent must tell the user at the end (resolved like
    workflow arguments). ``requires`` names slots the agent must learn although no tool
    argument takes them verbatim (which item to return, when it only has a name). ``context``
    holds every fact of the task; the instruction phrasing decides which of the workflow's
    slots the user states up front and which stay hidden.

    On construction every named step reference becomes the positional ``ArgSource`` the
    engine serialises, and every source is copied, so drafts never share a mutable argument.
    A reference to an unknown, ambiguous or later step raises ``ValueError`` here, when the
    pack is first exercised, instead of resolving to the wrong output.
    """

    goal: str
    context: dict[str, Any]
    workflow: list[Any]  # DraftStep as written; WorkflowStep once built
    outcome: list[Any]  # Source as written; ArgSource once built
    requires: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not all(isinstance(s, DraftStep) for s in self.workflow):
            raise TypeError("a draft's workflow is made of step(...) calls")
        names = [s.name for s in self.workflow]

        def resolve(source: Source, before: int, where: str) -> ArgSource:
            if isinstance(source, ArgSource):
                return _fresh(source)
            hits = [i for i, n in enumerate(names) if n == source.name]
            if not hits:
                raise ValueError(f"{where}: no step is named {source.name!r} (steps: {', '.join(names)})")
            if len(hits) > 1:
                raise ValueError(f"{where}: several steps are named {source.name!r}; give each its own "
                                 "name with .named(...)")
            if hits[0] >= before:
                raise ValueError(f"{where}: step {source.name!r} does not come before it")
            return ArgSource(kind="step", step=hits[0], path=list(source.path))

        self.workflow = [
            WorkflowStep(tool=s.tool, purpose=s.purpose,
                         args={k: resolve(v, i, f"{s.name}.{k}") for k, v in s.args.items()})
            for i, s in enumerate(self.workflow)]
        self.outcome = [resolve(src, len(names), "outcome") for src in self.outcome]


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
    it holds; otherwise the agent must refuse and say why (see ``kit`` for factories).

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
    needs_identity: bool = False

    def holds(self, output: Any, identity: Any) -> bool:
        return bool(self.check(output, identity) if self.needs_identity else self.check(output))


@dataclass(frozen=True)
class IdPattern:
    """Where an identifier stands in a conversation's text, for the training data's id
    renaming (``flywheel_training.data.randomize_ids``): ``regex``'s first group (or the
    whole match) is a run that gets fresh random ``digits`` of the same length, or a fresh
    ``date`` (YYYY-MM-DD). Amounts, counts and dates that rules compare must not match."""

    regex: str
    kind: Literal["digits", "date"] = "digits"

    def __post_init__(self) -> None:
        if self.kind not in ("digits", "date"):
            raise ValueError(f"id pattern kind must be 'digits' or 'date', not {self.kind!r}")
        if re.compile(self.regex).groups > 1:
            raise ValueError(f"id pattern {self.regex!r} has more than one group: only the first is renamed")


@dataclass(frozen=True)
class Domain:
    """A domain pack. ``id_patterns`` declares where the pack's identifiers stand in text
    (see ``IdPattern``); every pack lists ``kit.ID_DIGITS`` and its own special ones."""

    name: str
    description: str
    policy: str
    tools: tuple[Tool, ...]
    slots: tuple[Slot, ...]
    templates: tuple[TaskTemplate, ...]
    generate_world: Callable[[random.Random], World]
    verification_tools: tuple[str, ...]
    conditions: tuple[Condition, ...] = ()
    id_patterns: tuple[IdPattern, ...] = ()
    transfer_tool: str = "transfer_to_human_agents"
    from_file: bool = False
    """A domain file's domain (``domain_files.DomainFile.to_domain``): its tasks are written by
    an LLM, so any fact a task names is a slot, worded after its name (``open_slot``), and its
    tools already send what has no Python implementation to the stage's LLM tool."""

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
        if self.from_file:
            return open_slot(name)
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
    """A money amount rounded to cents: every amount a tool stores or returns goes through it."""
    return round(float(value) + 0.0, 2)
