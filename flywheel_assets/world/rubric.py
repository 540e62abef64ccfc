"""Rubrics: built from an instance's expected path, scored from observable behaviour only.

Items are declarative predicates (``RubricItem.check``) over the trajectory: the calls the
agent made and their results, what the user revealed, what the agent said, how the episode
ended and the final world. Reward is 0 when the episode did not end properly or any
prohibited item is violated (the hard gate); otherwise the weighted fraction of sub-goal
and interaction items met. Success means every item is met.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flywheel_assets.world.rollout import parse_tool_call, run_rollouts
from flywheel_assets.world.tasks import (
    ItemResult,
    PathStep,
    Rubric,
    RubricItem,
    Score,
    TaskInstance,
    Trajectory,
    World,
    canonical_json,
    world_hash,
)

CREDITED = ("subgoal", "interaction")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


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


def world_changes(before: World, after: World) -> list[dict[str, Any]]:
    """Field-level differences, for people reading a rubric (scoring uses the hash)."""
    changes = []
    for table in sorted(set(before) | set(after)):
        rows_before, rows_after = before.get(table, {}), after.get(table, {})
        for key in sorted(set(rows_before) | set(rows_after)):
            old, new = rows_before.get(key, {}), rows_after.get(key, {})
            for name in sorted(set(old) | set(new)):
                if old.get(name) != new.get(name):
                    changes.append({"path": f"{table}/{key}/{name}", "before": old.get(name), "after": new.get(name)})
    return changes


def build_rubric(
    expected_path: list[PathStep],
    hidden_slots: list[str],
    initial_world: World,
    final_world: World,
    *,
    write_tools: set[str],
    verification_tools: tuple[str, ...],
    ends_with: str,
    secrets: list[Any] = (),  # type: ignore[assignment]
) -> Rubric:
    """``secrets`` are outcome values the user does not know yet: a read-only task may tell
    them only after verifying the user."""
    items: list[RubricItem] = []
    writes = [s for s in expected_path if s.action == "call" and s.tool in write_tools]
    for i, s in enumerate(writes):
        items.append(RubricItem(f"subgoal:call:{i}:{s.tool}", "subgoal", f"called {s.tool} with the right arguments",
                                {"type": "called", "tool": s.tool, "args": s.args}))
    key_reads = [s for s in expected_path if s.action == "call" and s.tool not in write_tools
                 and s.tool not in verification_tools]
    if not writes and key_reads:
        s = key_reads[-1]
        items.append(RubricItem(f"subgoal:call:0:{s.tool}", "subgoal", f"looked up {s.tool}",
                                {"type": "called", "tool": s.tool, "args": s.args}))
    if writes:
        items.append(RubricItem("subgoal:final_state", "subgoal", "the final world has exactly the expected changes",
                                {"type": "final_state", "world_hash": world_hash(final_world),
                                 "changes": world_changes(initial_world, final_world)}))
    for name in hidden_slots:
        items.append(RubricItem(f"interaction:asked:{name}", "interaction", f"asked the user for {name}",
                                {"type": "asked_slot", "slot": name}))
    for s in expected_path:
        if s.action in ("inform", "refuse") and s.mentions:
            # For a read-only request, the information told is the goal itself.
            kind = "subgoal" if s.action == "inform" and not writes else "interaction"
            items.append(RubricItem(f"{kind}:{s.action}", kind, "told the user the outcome",
                                    {"type": "informed", "mentions": s.mentions,
                                     "write_tools": sorted(write_tools)}))
    items.append(RubricItem("prohibited:unexpected_write", "prohibited", "made no write the task does not call for",
                            {"type": "no_unexpected_writes", "allowed": [{"tool": s.tool, "args": s.args} for s in writes],
                             "write_tools": sorted(write_tools)}))
    if writes:
        items.append(RubricItem("prohibited:write_before_verification", "prohibited",
                                "verified the user before any write",
                                {"type": "verified_before_write", "tools": list(verification_tools),
                                 "write_tools": sorted(write_tools)}))
    if not writes and secrets and any(s.action == "inform" for s in expected_path):
        items.append(RubricItem("prohibited:report_before_verification", "prohibited",
                                "told account information only after verifying the user",
                                {"type": "verified_before_report", "tools": list(verification_tools),
                                 "values": list(secrets)}))
    allowed_end = ["transfer"] if ends_with == "transfer" else ["user_stop"]
    items.append(RubricItem("termination", "termination", f"the episode ended by {allowed_end[0]}",
                            {"type": "termination", "allowed": allowed_end}))
    return Rubric(items=items)


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


def mentioned(text: str, value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value).strip().lower() in text.lower()
    numbers = [float(n.replace(",", "")) for n in _NUMBER.findall(text)]
    return any(abs(n - float(value)) < 0.005 for n in numbers)


def _check(check: dict[str, Any], trajectory: Trajectory, events: list[CallEvent]) -> tuple[bool, str]:
    kind = check["type"]
    done = [e for e in events if e.ok]
    if kind == "called":
        hit = [e for e in done if e.name == check["tool"] and same_args(e.args or {}, check["args"])]
        return bool(hit), "" if hit else f"no successful {check['tool']} call with {canonical_json(check['args'])}"
    if kind == "final_state":
        actual = world_hash(trajectory.final_world)
        return actual == check["world_hash"], "" if actual == check["world_hash"] else "final world differs"
    if kind == "asked_slot":
        ok = check["slot"] in trajectory.user_log.get("revealed", {})
        return ok, "" if ok else f"never obtained {check['slot']} from the user"
    if kind == "informed":
        writes = [e.index for e in done if e.name in check.get("write_tools", [])]
        after = max(writes, default=-1)
        texts = [m.get("content") or "" for i, m in enumerate(trajectory.messages)
                 if m.get("role") == "assistant" and i > after]
        ok = any(all(mentioned(t, v) for v in check["mentions"]) for t in texts)
        return ok, "" if ok else f"never told the user {check['mentions']}"
    if kind == "no_unexpected_writes":
        bad = [e for e in done if e.name in check["write_tools"]
               and not any(a["tool"] == e.name and same_args(e.args or {}, a["args"]) for a in check["allowed"])]
        return not bad, "" if not bad else f"unexpected write {bad[0].name}({canonical_json(bad[0].args)})"
    if kind == "verified_before_write":
        first_verify = min((e.index for e in done if e.name in check["tools"]), default=None)
        bad = [e for e in done if e.name in check["write_tools"] and (first_verify is None or e.index < first_verify)]
        return not bad, "" if not bad else f"{bad[0].name} before verification"
    if kind == "not_called":  # with "attempts", trying counts even when the tool refuses
        bad = [e for e in (events if check.get("attempts") else done) if e.name == check["tool"]
               and ("args" not in check or same_args(e.args or {}, check["args"]))]
        return not bad, "" if not bad else f"called prohibited {check['tool']}"
    if kind == "verified_before_report":
        first_verify = min((e.index for e in done if e.name in check["tools"]), default=len(trajectory.messages))
        early = [i for i, m in enumerate(trajectory.messages[:first_verify]) if m.get("role") == "assistant"
                 and any(mentioned(m.get("content") or "", v) for v in check["values"])]
        return not early, "" if not early else "told account information before verification"
    if kind == "not_mentioned":
        said = [m.get("content") or "" for m in trajectory.messages if m.get("role") == "assistant"]
        bad = any(mentioned(text, check["value"]) for text in said)
        return not bad, "" if not bad else f"disclosed {check['value']!r}"
    if kind == "termination":
        ok = trajectory.termination in check["allowed"]
        return ok, "" if ok else f"ended by {trajectory.termination}"
    raise ValueError(f"unknown rubric check type {kind!r}")


def score(instance: TaskInstance, trajectory: Trajectory) -> Score:
    events = call_events(trajectory.messages)
    results = []
    for item in instance.rubric.items:
        met, detail = _check(item.check, trajectory, events)
        results.append(ItemResult(item.item_id, item.kind, met, detail))
    gate = next((f"{r.item_id}: {r.detail}" for r in results if not r.met and r.kind in ("termination", "prohibited")),
                None)
    # Gates earn nothing by being passed: doing nothing must not look like partial success.
    weights = {i.item_id: i.weight for i in instance.rubric.items if i.kind in CREDITED}
    total = sum(weights.values()) or 1.0
    reward = 0.0 if gate else round(sum(weights.get(r.item_id, 0.0) for r in results if r.met) / total, 6)
    return Score(trajectory.trajectory_id, instance.instance_id, results, reward,
                 success=all(r.met for r in results), gate=gate)


def align_with_teacher(instance: TaskInstance, trajectory: Trajectory, result: Score) -> dict[str, Any]:
    """Keep a task only if the teacher solves it; record at which message each subgoal was
    reached (the alignment of rubric and trajectory) and, for a DISCARD, why."""
    if not result.success:
        failed = "; ".join(f"{i.item_id}: {i.detail}" for i in result.failed_items())
        return {"verdict": "DISCARD", "reason": f"teacher failed ({trajectory.termination}): {failed}"}
    events = [e for e in call_events(trajectory.messages) if e.ok]
    alignment = {}
    for item in instance.rubric.items:
        if item.check["type"] == "called":
            alignment[item.item_id] = next(e.index for e in events if e.name == item.check["tool"]
                                           and same_args(e.args or {}, item.check["args"]))
    return {"verdict": "KEEP", "reason": "", "alignment": alignment}


def teacher_filter(instances: list[TaskInstance], teacher: Any, *, max_turns: int = 30
                   ) -> tuple[list[Trajectory], list[Score], list[dict[str, Any]]]:
    """Play every instance with the teacher; each gets a KEEP or DISCARD verdict (with the
    reason) and, when kept, the alignment of its rubric with the teacher's trajectory."""
    trajectories = run_rollouts(instances, teacher, max_turns=max_turns)
    scores = [score(i, t) for i, t in zip(instances, trajectories)]
    verdicts = [{"instance_id": i.instance_id, **align_with_teacher(i, t, s)}
                for i, t, s in zip(instances, trajectories, scores)]
    return trajectories, scores, verdicts
