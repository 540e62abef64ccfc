"""The fixed held-out Mock World evaluation: pass^1, pass^k and mean rubric reward, per
domain and per phase (linear, branched, adversarial).

pass^k follows τ²-bench: for a task with n trials of which c succeeded, the chance that k
trials drawn without replacement all succeed is C(c, k) / C(n, k); pass^k is its mean
over tasks. pass^1 is then the plain success rate. Every figure comes with a 95 % percentile
bootstrap interval over tasks (``*_ci``), so two rounds' figures can be told apart from noise.
With a greedy policy, every instance is also played once with greedy decoding: ``greedy``
is that single episode's success rate (the model's most likely behaviour), beside the
sampled trials' pass^k (how reliably it solves a task).
"""

from __future__ import annotations

import hashlib
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import comb
from typing import Any

import numpy as np

from flywheel_assets.world.rollout import BatchPolicy, run_rollouts
from flywheel_assets.world.rubric import score
from flywheel_assets.world.tasks import Score, TaskInstance, Trajectory

PHASE_GROUPS = {"seed": "linear", "linear": "linear", "branched": "branched", "adversarial": "adversarial",
                "augmented": "augmented"}


def pass_hat_k(successes: Sequence[int], trials: int, k: int) -> float:
    """Mean over tasks of C(c, k) / C(n, k), with c successes out of n = ``trials``."""
    if not 1 <= k <= trials:
        raise ValueError(f"k must be in 1..{trials}, got {k}")
    if not successes:
        return 0.0
    return statistics.fmean(comb(c, k) / comb(trials, k) for c in successes)


@dataclass
class EvalResult:
    trials: int
    rows: list[dict[str, Any]]  # one per group: overall, each domain, each phase
    scores: list[Score]
    trajectories: list[Trajectory]  # the trials, in the order of ``scores``
    greedy_scores: list[Score] = field(default_factory=list)  # one greedy episode per instance, when played
    greedy_trajectories: list[Trajectory] = field(default_factory=list)

    def overall(self) -> dict[str, Any]:
        return self.rows[0]


BOOTSTRAP_RESAMPLES = 2000
CI_LEVEL = 0.95


def bootstrap_ci(per_task: Sequence[float], *, seed: str, resamples: int = BOOTSTRAP_RESAMPLES,
                 level: float = CI_LEVEL) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of ``per_task`` over tasks (tasks drawn
    with replacement), from a generator seeded by ``seed``: the same figures give the same
    interval on any machine."""
    if not per_task:
        return 0.0, 0.0
    values = np.asarray(per_task, dtype=np.float64)
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "little"))
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return round(float(low), 6), round(float(high), 6)


def _row(group: str, instances: Sequence[TaskInstance], by_instance: dict[str, list[Score]], trials: int,
         greedy: dict[str, Score]) -> dict[str, Any]:
    successes = [sum(s.success for s in by_instance[i.instance_id]) for i in instances]
    rewards = [s.reward for i in instances for s in by_instance[i.instance_id]]
    task_rewards = [statistics.fmean(s.reward for s in by_instance[i.instance_id]) for i in instances]
    row: dict[str, Any] = {"group": group, "tasks": len(instances),
                           "reward_mean": statistics.fmean(rewards) if rewards else 0.0,
                           "reward_mean_ci": bootstrap_ci(task_rewards, seed=f"{group}/reward")}
    for k in range(1, trials + 1):
        row[f"pass^{k}"] = pass_hat_k(successes, trials, k)
        row[f"pass^{k}_ci"] = bootstrap_ci([comb(c, k) / comb(trials, k) for c in successes], seed=f"{group}/{k}")
    if greedy:
        solved = [float(greedy[i.instance_id].success) for i in instances]
        row["greedy"] = statistics.fmean(solved) if solved else 0.0
        row["greedy_ci"] = bootstrap_ci(solved, seed=f"{group}/greedy")
    return row


def evaluate(policy: BatchPolicy, instances: Sequence[TaskInstance], *, trials: int, max_turns: int,
             greedy_policy: BatchPolicy | None = None) -> EvalResult:
    """Play every held-out instance ``trials`` times with ``policy`` (and once more with
    ``greedy_policy``, when given: the same model decoding greedily) and aggregate."""
    trajectories = run_rollouts(instances, policy, samples=trials, max_turns=max_turns)
    by_id = {i.instance_id: i for i in instances}
    scores = [score(by_id[t.instance_id], t) for t in trajectories]
    greedy_trajectories = (run_rollouts(instances, greedy_policy, samples=1, max_turns=max_turns)
                           if greedy_policy is not None else [])
    greedy_scores = [score(by_id[t.instance_id], t) for t in greedy_trajectories]
    greedy = {s.instance_id: s for s in greedy_scores}
    by_instance: dict[str, list[Score]] = defaultdict(list)
    for s in scores:
        by_instance[s.instance_id].append(s)
    groups: dict[str, list[TaskInstance]] = {"all": list(instances)}
    for inst in instances:
        groups.setdefault(f"domain:{inst.domain}", []).append(inst)
        groups.setdefault(f"phase:{PHASE_GROUPS.get(inst.phase, inst.phase)}", []).append(inst)
    rows = [_row(name, members, by_instance, trials, greedy) for name, members in groups.items()]
    # per task, so two checkpoints on the same set can be compared task by task (paired)
    rows[0]["successes"] = {i.instance_id: sum(s.success for s in by_instance[i.instance_id]) for i in instances}
    if greedy:
        rows[0]["greedy_successes"] = {i.instance_id: int(greedy[i.instance_id].success) for i in instances}
    return EvalResult(trials, rows, scores, trajectories, greedy_scores, greedy_trajectories)
