"""Policy conditions as data: how an LLM-written task (a domain file's) branches.

A pack declares its conditions in Python (``domains/kit.py``); a task the LLM world writer
wrote carries its own in ``TaskSpec.conditions``, each a dict::

    {"name": "claim_is_open", "description": "the claim is still open",
     "guards": ["withdraw_claim"], "read_tool": "get_claim", "field": ["status"],
     "allowed": ["submitted", "under_review"],
     "falsify": {"table": "claims", "key_argument": "claim_id", "field": "status", "value": "paid"},
     "claim": "My claim is definitely still open."}

It holds when the read's output at ``field`` is one of ``allowed``; the falsifier sets
``world[table][read_args[key_argument]][field] = value``, which makes the read show a value
outside ``allowed`` (the back-translated branch where the agent must refuse, naming it).
The engine looks conditions up through ``task_conditions`` / ``find_condition``, so a pack
task and a written one branch the same way.
"""

from __future__ import annotations

import random
from typing import Any

from flywheel_assets.world.domains.base import Condition, Domain
from flywheel_assets.world.tasks import TaskSpec, World

CONDITION_KEYS = ("name", "description", "guards", "read_tool", "field", "allowed", "falsify", "claim")
FALSIFY_KEYS = ("table", "key_argument", "field", "value")


def field_path(field: Any) -> list[Any]:
    """``"status"`` or ``["limits", "daily"]`` as a list of keys."""
    return list(field) if isinstance(field, list) else [field]


def read_field(output: Any, path: list[Any]) -> Any:
    """``output`` at ``path``; KeyError when it is not there."""
    value = output
    for key in path:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and isinstance(key, int) and 0 <= key < len(value):
            value = value[key]
        else:
            raise KeyError(f"no {key!r} in the read's output")
    return value


def _holds(path: list[Any], allowed: list[Any]):
    def check(output: Any) -> bool:
        try:
            return read_field(output, path) in allowed
        except KeyError:
            return False

    return check


def _reason(path: list[Any]):
    def reason(output: Any) -> Any:
        try:
            return read_field(output, path)
        except KeyError:
            return None

    return reason


def _falsifier(spec: dict[str, Any]):
    def falsify(rng: random.Random, world: World, read_args: dict[str, Any]) -> None:
        key = read_args[spec["key_argument"]]
        world[spec["table"]][str(key).strip()][spec["field"]] = spec["value"]

    return falsify


def condition_from_data(spec: dict[str, Any]) -> Condition:
    """The engine's ``Condition`` of a condition dict (validated by the writer)."""
    path = field_path(spec["field"])
    return Condition(spec["name"], spec["description"], guards=tuple(spec["guards"]), read_tool=spec["read_tool"],
                     check=_holds(path, list(spec["allowed"])), falsify=_falsifier(spec["falsify"]),
                     reason=_reason(path), claim=spec["claim"])


def condition_problem(spec: Any, domain: Domain) -> str:
    """Why ``spec`` is not a usable condition of ``domain`` in itself ("" when it is); the
    writer checks it against the task's replayed workflow too."""
    if not isinstance(spec, dict):
        return "a condition must be an object"
    missing = [k for k in CONDITION_KEYS if k not in spec]
    if missing:
        return f"missing {', '.join(missing)}"
    if not isinstance(spec["name"], str) or not spec["name"].isidentifier():
        return "name must be an identifier"
    if any(c.name == spec["name"] for c in domain.conditions):
        return f"name {spec['name']!r} is taken by a condition of the domain"
    if not isinstance(spec["guards"], list) or not spec["guards"]:
        return "guards must be a non-empty list of write tools"
    if not all(isinstance(g, str) for g in spec["guards"]):
        return "guards must be tool names"
    unknown = [g for g in spec["guards"] if g not in domain.write_tools]
    if unknown:
        return f"guards {unknown} are not write tools of the domain"
    if not domain.has_tool(str(spec["read_tool"])) or spec["read_tool"] in domain.write_tools:
        return f"read_tool {spec['read_tool']!r} is not a read tool of the domain"
    if not isinstance(spec["allowed"], list) or not spec["allowed"]:
        return "allowed must be a non-empty list of values"
    falsify = spec["falsify"]
    if not isinstance(falsify, dict) or any(k not in falsify for k in FALSIFY_KEYS):
        return f"falsify must be an object with {', '.join(FALSIFY_KEYS)}"
    if falsify["value"] in spec["allowed"]:
        return "falsify.value is one of allowed, so the condition would still hold"
    if not isinstance(spec["description"], str) or not spec["description"].strip():
        return "description must be a sentence"
    if not isinstance(spec["claim"], str) or not spec["claim"].strip():
        return "claim must be what an adversarial user asserts"
    return ""


def task_conditions(domain: Domain, task: TaskSpec) -> list[Condition]:
    """The conditions that may branch ``task``: the domain's and the task's own."""
    return list(domain.conditions) + [condition_from_data(c) for c in task.conditions]


def find_condition(domain: Domain, task: TaskSpec, name: str) -> Condition:
    for condition in task_conditions(domain, task):
        if condition.name == name:
            return condition
    raise KeyError(f"domain {domain.name!r} and task {task.task_id} have no condition {name!r}")
