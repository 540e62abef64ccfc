"""Figures of a scored rollout batch: what the CLI prints and rounds record."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

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
