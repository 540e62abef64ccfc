"""The Mock World data model: tools, worlds, workflows, tasks, instances, trajectories, scores.

Everything here is plain data that round-trips through JSON exactly (``to_dict`` /
``from_dict``) and carries a stable, content-derived id, so the same seed always yields the
same ids and the warehouse can trace any row back to what it came from.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any, Literal

World = dict[str, dict[str, dict[str, Any]]]
"""A world state: ``{table: {entity_id: {field: value}}}``, JSON-only values."""

Message = dict[str, Any]
"""One chat message in the OpenAI format (``role``, ``content``, ``tool_calls``, ...)."""


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the form hashed for ids and cache keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def stable_id(prefix: str, *parts: Any) -> str:
    digest = hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()
    return f"{prefix}-{digest[:16]}"


def seeded_draw(seed: str, ids: Iterable[str], count: int) -> list[str]:
    """``count`` of ``ids`` (all when fewer) drawn uniformly without replacement: the same
    seed and ids give the same draw, whatever order the ids come in."""
    pool = sorted(set(ids))
    return random.Random(seed).sample(pool, min(count, len(pool)))


def copy_world(world: World) -> World:
    """A deep copy; worlds hold JSON values only, and a JSON round trip copies them fastest."""
    return json.loads(json.dumps(world))


def world_hash(world: World) -> str:
    return hashlib.sha256(canonical_json(world).encode()).hexdigest()[:16]


def json_fields(value: Any) -> dict[str, Any]:
    """A dataclass's fields for ``json.dumps(default=...)``, less the ``_omit_when_empty`` ones
    that are empty (fields added later, so stored JSON of older objects is unchanged)."""
    data = vars(value)
    omit = getattr(type(value), "_omit_when_empty", ())
    return {k: v for k, v in data.items() if v or k not in omit} if omit else data


class _JsonData:
    """Exact JSON round-trip for flat dataclasses whose nested parts are JSON values or
    other ``_JsonData`` dataclasses listed in ``_nested``."""

    _nested: dict[str, type] = {}
    _nested_lists: dict[str, type] = {}

    def to_dict(self) -> dict[str, Any]:
        # vars() serialises nested dataclasses without asdict's deep copy of whole worlds.
        return json.loads(json.dumps(self, default=json_fields, sort_keys=True, ensure_ascii=False))

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Takes ownership of ``data``'s values (pass a fresh ``json.loads`` result or a copy)."""
        kwargs = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name in cls._nested and value is not None:
                value = cls._nested[f.name].from_dict(value)
            elif f.name in cls._nested_lists:
                value = [cls._nested_lists[f.name].from_dict(v) for v in value]
            kwargs[f.name] = value
        return cls(**kwargs)

    def to_json(self) -> str:
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))


@dataclass
class ToolSpec(_JsonData):
    """What the agent sees of a tool: an OpenAI function schema, plus whether it writes."""

    name: str
    description: str
    parameters: dict[str, Any]
    writes: bool = False

    def openai_schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass
class ArgSource(_JsonData):
    """Where a workflow argument comes from: a hidden/known slot, a constant, or a field of
    an earlier step's output (``path`` is a list of keys/indices into that output)."""

    kind: Literal["slot", "const", "step"]
    slot: str | None = None
    value: Any = None
    step: int | None = None
    path: list[Any] = field(default_factory=list)


@dataclass
class WorkflowStep(_JsonData):
    tool: str
    args: dict[str, ArgSource]
    purpose: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WorkflowStep":
        return cls(
            tool=data["tool"],
            args={k: ArgSource.from_dict(v) for k, v in data["args"].items()},
            purpose=data.get("purpose", ""),
        )


@dataclass
class PathStep(_JsonData):
    """One step of an instance's expected path, fully concrete.

    ``ask`` requests hidden slots from the user; ``call`` is a tool call with concrete
    arguments; ``inform`` tells the user the outcome (``mentions`` must appear in the text);
    ``refuse`` declines on policy grounds. No expected path hands over to a human: an agent
    may still call the transfer tool, which ends the episode and fails the termination item.
    """

    action: Literal["ask", "call", "inform", "refuse"]
    slots: list[str] = field(default_factory=list)
    tool: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    mentions: list[Any] = field(default_factory=list)
    expect_error: bool = False  # a call whose failure is the point (verification that must fail)


@dataclass
class RubricItem(_JsonData):
    """One observable criterion. ``check`` is a declarative predicate (see ``rubric.py``)."""

    item_id: str
    kind: Literal["subgoal", "interaction", "prohibited", "termination"]
    description: str
    check: dict[str, Any]
    weight: float = 1.0


@dataclass
class Rubric(_JsonData):
    items: list[RubricItem]
    _nested_lists = {"items": RubricItem}


@dataclass
class TaskSpec(_JsonData):
    """The complete task: goal, the workflow that achieves it and everything it needs."""

    task_id: str
    domain: str
    task_type: str
    goal: str
    workflow: list[WorkflowStep]
    context: dict[str, Any]
    required_slots: list[str]
    world: World
    outcome: list[ArgSource]
    seed: str
    ends_with: str = "inform"  # every task ends by telling the outcome; kept so stored task JSON is unchanged
    # A task an LLM wrote for a domain file (``world/llm/world_writer.py``) carries what a
    # pack's template would give: its instruction phrasings, the policy conditions that branch
    # its workflow (dicts, see ``world/written.py``) and who wrote it. Empty for pack tasks,
    # and then left out of the JSON, so stored pack tasks are unchanged.
    phrasings: list[str] = field(default_factory=list)
    conditions: list[dict[str, Any]] = field(default_factory=list)
    written_by: dict[str, Any] = field(default_factory=dict)
    _nested_lists = {"workflow": WorkflowStep, "outcome": ArgSource}
    _omit_when_empty = ("phrasings", "conditions", "written_by")


@dataclass
class TaskInstance(_JsonData):
    """What an episode is played on: the information-deficient instruction, the facts only
    the user knows, the world, the expected path and the rubric."""

    instance_id: str
    task_id: str
    domain: str
    task_type: str
    round: str
    instruction: str
    hidden_context: dict[str, Any]
    known_context: dict[str, Any]
    initial_world: World
    expected_path: list[PathStep]
    rubric: Rubric
    persona: str = "neutral"
    adversarial: dict[str, Any] | None = None
    parent_ids: list[str] = field(default_factory=list)
    phase: str = "seed"
    meta: dict[str, Any] = field(default_factory=dict)
    _nested = {"rubric": Rubric}
    _nested_lists = {"expected_path": PathStep}


Termination = Literal["user_stop", "transfer", "max_turns", "context_length", "simulator_failure"]
SIMULATOR_FAILURES = ("user", "tool", "judge")
"""``failed_by`` values that blame the world, not the agent: such episodes are no training signal."""


@dataclass
class Trajectory(_JsonData):
    trajectory_id: str
    instance_id: str
    policy: str
    messages: list[Message]
    termination: str
    turns: int
    final_world: World
    user_log: dict[str, Any]
    tool_stats: dict[str, int]
    failed_by: str | None = None
    """Who ended the episode badly: ``agent`` (ran out of turns or context), ``user`` or
    ``tool`` (a simulator failed; never training signal), or None (ended properly; the
    rubric decides how well)."""


@dataclass
class ItemResult(_JsonData):
    """``met`` is the verdict that counts. Where an LLM judge looked at the item as well,
    ``predicate_met`` keeps the predicate's verdict and ``judge_met`` the judge's;
    ``judge_failed`` marks an unparseable verdict (the item then counts for nothing)."""

    item_id: str
    kind: str
    met: bool
    detail: str = ""
    predicate_met: bool | None = None
    judge_met: bool | None = None
    judge_detail: str = ""
    judge_failed: bool = False


@dataclass
class Score(_JsonData):
    trajectory_id: str
    instance_id: str
    items: list[ItemResult]
    reward: float
    success: bool
    gate: str | None = None
    failed_by: str | None = None  # "judge" when a judge verdict could not be read
    _nested_lists = {"items": ItemResult}

    def failed_items(self) -> list[ItemResult]:
        return [i for i in self.items if not i.met]
