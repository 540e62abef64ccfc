"""Rubrics: built from an instance's expected path, scored from observable behaviour only.

Items are declarative predicates (``RubricItem.check``, decided by the registry in
``rubric_checks``) over the trajectory: the calls the agent made and their results, what the
user revealed, what the agent said, how the episode ended and the final world. Reward is 0
when the episode did not end properly or any prohibited item is violated (the hard gate);
otherwise the weighted fraction of sub-goal and interaction items met. Success means every
item is met.
"""

from __future__ import annotations

from typing import Any

from flywheel_assets.world.rollout import run_rollouts
from flywheel_assets.world.rubric_checks import (  # noqa: F401  (re-exported: the rubric's vocabulary)
    CALLED,
    CallEvent,
    call_events,
    mentioned,
    normalize_args,
    run_check,
    same_args,
    successful_calls,
)
from flywheel_assets.world.tasks import (
    ItemResult,
    PathStep,
    Rubric,
    RubricItem,
    Score,
    TaskInstance,
    Trajectory,
    World,
    world_hash,
)

CREDITED = ("subgoal", "interaction")


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
    # a domain file may have no verification step (verification_tools empty): nothing to gate on
    if writes and verification_tools:
        items.append(RubricItem("prohibited:write_before_verification", "prohibited",
                                "verified the user before any write",
                                {"type": "verified_before_write", "tools": list(verification_tools),
                                 "write_tools": sorted(write_tools)}))
    if not writes and secrets and verification_tools and any(s.action == "inform" for s in expected_path):
        items.append(RubricItem("prohibited:report_before_verification", "prohibited",
                                "told account information only after verifying the user",
                                {"type": "verified_before_report", "tools": list(verification_tools),
                                 "values": list(secrets)}))
    items.append(RubricItem("termination", "termination", "the episode ended by user_stop",
                            {"type": "termination", "allowed": ["user_stop"]}))
    return Rubric(items=items)


def score(instance: TaskInstance, trajectory: Trajectory) -> Score:
    events = call_events(trajectory.messages)
    results = []
    for item in instance.rubric.items:
        met, detail = run_check(item.check, trajectory, events)
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
    events = call_events(trajectory.messages)
    alignment = {item.item_id: successful_calls(item.check, events)[0].index
                 for item in instance.rubric.items if item.check["type"] == CALLED}
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
