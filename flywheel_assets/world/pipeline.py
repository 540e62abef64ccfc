"""The stages of one flywheel round as plain functions over plain data.

Each Dagster asset is a thin wrapper around one of these; they also run without Dagster
(benchmarks, tests, notebooks). Round r's instances include round r-1's hard samples,
which the caller reads from the warehouse and passes in.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from flywheel_assets.world.augment import AugmentReport, augment_failures
from flywheel_assets.world.backtranslate import adversarial_instances, backtranslate_tree
from flywheel_assets.world.behavior_tree import BehaviorTree, expand_tree, linear_tree
from flywheel_assets.world.domains import DOMAINS
from flywheel_assets.world.rollout import BatchPolicy, make_caches, run_rollouts
from flywheel_assets.world.rubric import score
from flywheel_assets.world.synthesis import SeedBatch, seed_instances
from flywheel_assets.world.tasks import Score, TaskInstance, TaskSpec, Trajectory, stable_id


@dataclass(frozen=True)
class RoundConfig:
    """Size knobs of a round; tests and quick looks shrink them."""

    seed: int = 0
    domains: tuple[str, ...] = field(default_factory=lambda: tuple(sorted(DOMAINS)))
    tasks_per_domain: int = 12
    backtranslated_per_tree: int = 2
    adversarial_share: float = 0.25
    rollouts_per_instance: int = 2
    max_turns: int = 12  # the teacher's longest path takes 8
    augment_per_failure: int = 2
    # At most this many of the previous round's kept hard samples enter a round (0: all of
    # them). Each failure yields several variants, so uncapped the rounds grow without end.
    max_carried: int = 160
    # "failures": augment the instances the policy failed (the flywheel). "uniform": augment
    # as many instances drawn uniformly from the round, failed or not (the efficacy control).
    hard_sample_parents: str = "failures"


def seed_tasks(config: RoundConfig, round_key: str) -> SeedBatch:
    """Complete tasks and their information-deficient seed instances."""
    return seed_instances(config.domains, config.tasks_per_domain, seed=config.seed, round_key=round_key)


def behavior_trees(tasks: Sequence[TaskSpec]) -> list[BehaviorTree]:
    """Linear tree and its policy-driven expansion, per task."""
    trees = []
    for task in tasks:
        linear = linear_tree(task)
        trees += [linear, expand_tree(linear, task)]
    return trees


def task_instances(
    config: RoundConfig,
    round_key: str,
    seed: SeedBatch,
    trees: Sequence[BehaviorTree],
    previous_hard_samples: Sequence[TaskInstance] = (),
) -> list[TaskInstance]:
    """This round's instances: seed rewrites, back-translated branches, adversarial
    variants, and the previous round's hard samples carried in under new ids."""
    tasks = {t.task_id: t for t in seed.tasks}
    rng = random.Random(f"{config.seed}/{round_key}/instances")
    instances = list(seed.instances)
    for tree in trees:
        if tree.phase != "expanded":
            continue
        branched = backtranslate_tree(tree, tasks[tree.task_id], round_key=round_key,
                                      limit=config.backtranslated_per_tree, rng=rng)
        instances += branched
        instances += adversarial_instances(branched, share=config.adversarial_share, rng=rng)
    for hard in select_carried(previous_hard_samples, config.max_carried, rng):
        instances.append(replace(hard, instance_id=stable_id("inst", hard.instance_id, round_key),
                                 round=round_key, parent_ids=[hard.instance_id],
                                 meta={**hard.meta, "carried_from": hard.round}))
    return instances


def select_carried(hard_samples: Sequence[TaskInstance], limit: int, rng: random.Random) -> list[TaskInstance]:
    """At most ``limit`` hard samples (all when ``limit`` is 0), spread over their parents:
    one variant of every failed instance before a second of any, parents in a seeded order,
    so the cap keeps the breadth of what failed rather than the first failures' variants."""
    if not limit or len(hard_samples) <= limit:
        return list(hard_samples)
    by_parent: dict[str, list[TaskInstance]] = {}
    for hard in hard_samples:
        by_parent.setdefault(hard.parent_ids[0] if hard.parent_ids else hard.instance_id, []).append(hard)
    parents = sorted(by_parent)
    rng.shuffle(parents)
    chosen: list[TaskInstance] = []
    depth = 0
    while len(chosen) < limit:
        layer = [by_parent[p][depth] for p in parents if depth < len(by_parent[p])]
        chosen += layer[:limit - len(chosen)]
        depth += 1
    keep = {h.instance_id for h in chosen}
    return [h for h in hard_samples if h.instance_id in keep]  # in the hard-samples table's order


def rollouts(config: RoundConfig, instances: Sequence[TaskInstance], policy: BatchPolicy,
             teacher: BatchPolicy | None = None, progress: Any = None) -> list[Trajectory]:
    """The policy's rollouts (several per instance) and, when given, one teacher rollout per
    instance, sharing each task's consistency cache."""
    caches = make_caches(instances)
    trajectories = run_rollouts(instances, policy, samples=config.rollouts_per_instance,
                                max_turns=config.max_turns, caches=caches, progress=progress)
    if teacher is not None:
        trajectories += run_rollouts(instances, teacher, max_turns=config.max_turns, caches=caches)
    return trajectories


def rubric_scores(instances: Sequence[TaskInstance], trajectories: Sequence[Trajectory]) -> list[Score]:
    by_id = {i.instance_id: i for i in instances}
    return [score(by_id[t.instance_id], t) for t in trajectories]


def default_solvers() -> list[BatchPolicy]:
    """Independent solvers for the consistency filter on the embedded default: teacher
    strategies that ask at different times."""
    from flywheel_assets.world.teacher import ScriptedTeacher

    return [ScriptedTeacher("ask_all_first"), ScriptedTeacher("just_in_time")]


def hard_samples(config: RoundConfig, round_key: str, instances: Sequence[TaskInstance],
                 trajectories: Sequence[Trajectory], scores: Sequence[Score],
                 policy_name: str, solvers: Sequence[BatchPolicy] | None = None) -> AugmentReport:
    """Harder, verified variants of the instances the policy failed (or, for the efficacy
    control, of as many instances drawn uniformly: see ``RoundConfig.hard_sample_parents``)."""
    by_id = {i.instance_id: i for i in instances}
    policy_of = {t.trajectory_id: t.policy for t in trajectories}
    failed: dict[str, tuple[TaskInstance, Score]] = {}
    first_score: dict[str, Score] = {}
    for s in scores:
        if policy_of[s.trajectory_id] != policy_name:
            continue
        first_score.setdefault(s.instance_id, s)
        if not s.success and s.instance_id not in failed:
            failed[s.instance_id] = (by_id[s.instance_id], s)
    parents = list(failed.values())
    if config.hard_sample_parents == "uniform":
        drawn = random.Random(f"{config.seed}/{round_key}/uniform-parents").sample(
            sorted(first_score), min(len(parents), len(first_score)))
        parents = [(by_id[i], failed[i][1] if i in failed else first_score[i]) for i in drawn]
    elif config.hard_sample_parents != "failures":
        raise ValueError(f"hard_sample_parents must be 'failures' or 'uniform', got {config.hard_sample_parents!r}")
    return augment_failures(parents, round_key=round_key, seed=config.seed,
                            solvers=solvers or default_solvers(), per_failure=config.augment_per_failure,
                            max_turns=config.max_turns)
