"""Figures of a scored rollout batch: what the CLI prints and rounds record."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from flywheel_assets.world.rubric_checks import call_events
from flywheel_assets.world.tasks import Score, Trajectory


def batch_summary(trajectories: Sequence[Trajectory], scores: Sequence[Score]) -> dict[str, Any]:
    rewards = [s.reward for s in scores]
    groups: dict[str, list[float]] = defaultdict(list)
    for s in scores:
        groups[s.instance_id].append(s.reward)
    multi = [g for g in groups.values() if len(g) > 1]
    hits = sum(t.tool_stats.get("hits", 0) for t in trajectories)
    misses = sum(t.tool_stats.get("misses", 0) for t in trajectories)
    terminations: dict[str, int] = defaultdict(int)
    for t in trajectories:
        terminations[t.termination] += 1
    return {
        "episodes": len(scores),
        "instances": len(groups),
        "pass_rate": sum(s.success for s in scores) / len(scores) if scores else 0.0,
        "reward_mean": statistics.fmean(rewards) if rewards else 0.0,
        "reward_var": statistics.pvariance(rewards) if len(rewards) > 1 else 0.0,
        "saturated_groups": sum(1 for g in multi if len(set(g)) == 1),
        "groups": len(multi),
        "tool_calls": hits + misses,
        "cache_hit_rate": hits / (hits + misses) if hits + misses else 0.0,
        "tool_errors": sum(t.tool_stats.get("errors", 0) for t in trajectories),
        "turns": sum(t.turns for t in trajectories),
        "terminations": dict(sorted(terminations.items())),
    }


FAILURE_TYPES = ("prohibited_action", "asked_nothing", "wrong_argument", "missed_subgoal", "never_ended")
"""What a failed episode got wrong, most serious first: a prohibited action (the hard gate), a
hidden fact never asked for, a required call made with other arguments, a sub-goal or the
outcome missed, or no proper end."""


def failure_type(score: Score, trajectory: Trajectory | None = None) -> str | None:
    """The first of ``FAILURE_TYPES`` that the episode's failed rubric items show (None when it
    succeeded). Without the ``trajectory`` a wrong argument counts as a missed sub-goal."""
    if score.success:
        return None
    failed = score.failed_items()
    kinds = {i.kind for i in failed}
    if "prohibited" in kinds:
        return "prohibited_action"
    if any(i.item_id.startswith("interaction:asked:") for i in failed):
        return "asked_nothing"
    called = {e.name for e in call_events(trajectory.messages)} if trajectory is not None else set()
    if any(i.item_id.startswith("subgoal:call:") and i.item_id.rsplit(":", 1)[1] in called for i in failed):
        return "wrong_argument"
    if kinds & {"subgoal", "interaction"}:
        return "missed_subgoal"
    return "never_ended" if "termination" in kinds else "missed_subgoal"


def failure_distribution(trajectories: Sequence[Trajectory], scores: Sequence[Score]) -> dict[str, int]:
    """How many of the failed episodes fall under each failure type (every type, 0 included)."""
    counts = dict.fromkeys(FAILURE_TYPES, 0)
    for trajectory, result in zip(trajectories, scores, strict=True):
        kind = failure_type(result, trajectory)
        if kind is not None:
            counts[kind] += 1
    return counts
