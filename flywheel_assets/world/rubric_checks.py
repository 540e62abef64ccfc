"""Rubric check types: one function per ``RubricItem.check["type"]``, registered by name.

A check reads only observable behaviour: the calls the agent made and their results
(``CallEvent``), what the user revealed, what the agent said, how the episode ended and the
final world. Each returns ``(met, detail)``; ``detail`` says what was missing when it is not
met. ``run_check`` dispatches on the type and names the known types for an unknown one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flywheel_assets.world.rollout import parse_tool_call
from flywheel_assets.world.tasks import Trajectory, canonical_json, world_hash

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass
class CallEvent:
    index: int  # position in the message list
    name: str
    args: dict[str, Any] | None
    ok: bool


def call_events(messages: list[dict[str, Any]]) -> list[CallEvent]:
    results = {m.get("tool_call_id"): m.get("content", "") for m in messages if m.get("role") == "tool"}
    events = []
    for index, m in enumerate(messages):
        for call in m.get("tool_calls") or []:
            parsed = parse_tool_call(call, call.get("id", ""))
            content = results.get(call.get("id"), "Error: no result")
            ok = parsed.problem is None and not str(content).startswith("Error:")
            events.append(CallEvent(index, parsed.name, parsed.arguments, ok))
    return events


def normalize_args(value: Any) -> Any:
    """Argument values compared the way a person would: strings stripped, lists of
    scalars as sets, numbers by value."""
    if isinstance(value, dict):
        return {k: normalize_args(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [normalize_args(v) for v in value]
        return sorted(items, key=canonical_json) if all(not isinstance(v, (dict, list)) for v in items) else items
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return round(float(value), 6)
    return value


def same_args(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return canonical_json(normalize_args(a)) == canonical_json(normalize_args(b))


def mentioned(text: str, value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value).strip().lower() in text.lower()
    numbers = [float(n.replace(",", "")) for n in _NUMBER.findall(text)]
    return any(abs(n - float(value)) < 0.005 for n in numbers)


CheckFn = Callable[[dict[str, Any], Trajectory, list[CallEvent]], tuple[bool, str]]
CHECKS: dict[str, CheckFn] = {}
CALLED = "called"


def check_type(name: str) -> Callable[[CheckFn], CheckFn]:
    """Register the function that decides checks of type ``name``."""

    def register(fn: CheckFn) -> CheckFn:
        if name in CHECKS:
            raise ValueError(f"rubric check type {name!r} is registered twice")
        CHECKS[name] = fn
        return fn

    return register


def run_check(check: dict[str, Any], trajectory: Trajectory, events: list[CallEvent]) -> tuple[bool, str]:
    try:
        fn = CHECKS[check["type"]]
    except KeyError:
        known = ", ".join(sorted(CHECKS))
        raise ValueError(f"unknown rubric check type {check.get('type')!r}; known: {known}") from None
    return fn(check, trajectory, events)


def successful_calls(check: dict[str, Any], events: list[CallEvent]) -> list[CallEvent]:
    """The successful calls a "called" check accepts: its tool with equal arguments."""
    return [e for e in events if e.ok and e.name == check["tool"] and same_args(e.args or {}, check["args"])]


@check_type(CALLED)
def _called(check: dict[str, Any], trajectory: Trajectory, events: list[CallEvent]) -> tuple[bool, str]:
    hit = successful_calls(check, events)
    return bool(hit), "" if hit else f"no successful {check['tool']} call with {canonical_json(check['args'])}"


@check_type("final_state")
def _final_state(check: dict[str, Any], trajectory: Trajectory, events: list[CallEvent]) -> tuple[bool, str]:
    ok = world_hash(trajectory.final_world) == check["world_hash"]
    return ok, "" if ok else "final world differs"


@check_type("asked_slot")
def _asked_slot(check: dict[str, Any], trajectory: Trajectory, events: list[CallEvent]) -> tuple[bool, str]:
    ok = check["slot"] in trajectory.user_log.get("revealed", {})
    return ok, "" if ok else f"never obtained {check['slot']} from the user"


@check_type("informed")
def _informed(check: dict[str, Any], trajectory: Trajectory, events: list[CallEvent]) -> tuple[bool, str]:
    after = max((e.index for e in events if e.ok and e.name in check.get("write_tools", [])), default=-1)
    texts = [m.get("content") or "" for i, m in enumerate(trajectory.messages)
             if m.get("role") == "assistant" and i > after]
    ok = any(all(mentioned(t, v) for v in check["mentions"]) for t in texts)
    return ok, "" if ok else f"never told the user {check['mentions']}"


@check_type("no_unexpected_writes")
def _no_unexpected_writes(check: dict[str, Any], trajectory: Trajectory, events: list[CallEvent]
                          ) -> tuple[bool, str]:
    bad = [e for e in events if e.ok and e.name in check["write_tools"]
           and not any(a["tool"] == e.name and same_args(e.args or {}, a["args"]) for a in check["allowed"])]
    return not bad, "" if not bad else f"unexpected write {bad[0].name}({canonical_json(bad[0].args)})"


@check_type("verified_before_write")
def _verified_before_write(check: dict[str, Any], trajectory: Trajectory, events: list[CallEvent]
                           ) -> tuple[bool, str]:
    done = [e for e in events if e.ok]
    first_verify = min((e.index for e in done if e.name in check["tools"]), default=None)
    bad = [e for e in done if e.name in check["write_tools"] and (first_verify is None or e.index < first_verify)]
    return not bad, "" if not bad else f"{bad[0].name} before verification"


@check_type("not_called")
def _not_called(check: dict[str, Any], trajectory: Trajectory, events: list[CallEvent]) -> tuple[bool, str]:
    # With "attempts", trying counts even when the tool refuses.
    bad = [e for e in events if (e.ok or check.get("attempts")) and e.name == check["tool"]
           and ("args" not in check or same_args(e.args or {}, check["args"]))]
    return not bad, "" if not bad else f"called prohibited {check['tool']}"


@check_type("verified_before_report")
def _verified_before_report(check: dict[str, Any], trajectory: Trajectory, events: list[CallEvent]
                            ) -> tuple[bool, str]:
    first_verify = min((e.index for e in events if e.ok and e.name in check["tools"]),
                       default=len(trajectory.messages))
    early = [i for i, m in enumerate(trajectory.messages[:first_verify]) if m.get("role") == "assistant"
             and any(mentioned(m.get("content") or "", v) for v in check["values"])]
    return not early, "" if not early else "told account information before verification"


@check_type("not_mentioned")
def _not_mentioned(check: dict[str, Any], trajectory: Trajectory, events: list[CallEvent]) -> tuple[bool, str]:
    said = [m.get("content") or "" for m in trajectory.messages if m.get("role") == "assistant"]
    bad = any(mentioned(text, check["value"]) for text in said)
    return not bad, "" if not bad else f"disclosed {check['value']!r}"


@check_type("termination")
def _termination(check: dict[str, Any], trajectory: Trajectory, events: list[CallEvent]) -> tuple[bool, str]:
    ok = trajectory.termination in check["allowed"]
    return ok, "" if ok else f"ended by {trajectory.termination}"
