"""The stages of one flywheel round as plain functions over plain data.

Each Dagster asset is a thin wrapper around one of these; they also run without Dagster
(benchmarks, tests, notebooks). Round r's instances include round r-1's hard samples,
which the caller reads from the warehouse and passes in.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import field_validator

from flywheel_assets.world.augment import AugmentReport, augment_failures, verified_variants
from flywheel_assets.world.backtranslate import adversarial_instances, backtranslate_tree
from flywheel_assets.world.behavior_tree import BehaviorTree, expand_tree, linear_tree
from flywheel_assets.world.domain_files import DomainFileError, loaded_domain_name, use_domain_files
from flywheel_assets.world.domains import DOMAINS, registered
from flywheel_assets.world.rollout import BackendFactory, BatchPolicy, UserFactory, make_caches, run_rollouts
from flywheel_assets.world.llm.judge import LLMJudge, judge_scores
from flywheel_assets.world.llm.writer import LLMTaskWriter
from flywheel_assets.world.metrics import failure_type
from flywheel_assets.world.rubric import score
from flywheel_assets.world.settings import SettingsGroup, join_list, setting, split_list
from flywheel_assets.world.synthesis import SeedBatch, seed_instances
from flywheel_assets.world.written_tasks import rejection, write_tasks
from flywheel_assets.world.tasks import Score, TaskInstance, TaskSpec, Trajectory, seeded_draw, stable_id

if TYPE_CHECKING:
    from flywheel_assets.world.llm.world_writer import LLMWorldWriter

HARD_SAMPLE_PARENTS = ("failures", "uniform", "uniform-all")
HARD_SAMPLE_PICKS = ("worst", "nearest", "nearest_per_type", "nearest_per_domain", "nearest_domain_scaled")


class RoundConfig(SettingsGroup):
    """The round's size and world: the one definition of these settings (the Dagster
    resource ``round_config`` and the ``flywheel`` flags are derived from it); tests and quick
    looks shrink them."""

    group: ClassVar[str] = "round"

    seed: int = setting(0, env="FLYWHEEL_SEED", help="seed of a round's synthesis, expansion and augmentation")
    # Declared before `domains`: loading the files makes their names valid domains.
    domain_files: str = setting("", env="FLYWHEEL_DOMAIN_FILES", flag="domain-file", repeat=True,
                                help="domain files (YAML or JSON, see examples/domains/) whose domains the round "
                                     "runs beside `domains`; comma-separated, or repeat --domain-file")
    domains: str = setting(",".join(sorted(DOMAINS)), env="FLYWHEEL_DOMAINS",
                           help="comma-separated domains: built-in packs, and domain files' names (naming only "
                                "those runs a domain file alone)",
                           choices=lambda: sorted(DOMAINS), many=True)
    tasks_per_domain: int = setting(12, env="FLYWHEEL_TASKS_PER_DOMAIN", ge=1,
                                    help="complete tasks synthesised per domain and round")
    backtranslated_per_tree: int = setting(2, env="FLYWHEEL_BACKTRANSLATED_PER_TREE", ge=0,
                                           help="behaviour-tree paths back-translated into instances, per tree")
    adversarial_share: float = setting(0.25, env="FLYWHEEL_ADVERSARIAL_SHARE", ge=0, le=1,
                                       help="share of back-translated instances given an adversarial user, 0..1")
    rollouts_per_instance: int = setting(2, env="FLYWHEEL_ROLLOUTS_PER_INSTANCE", ge=1,
                                         help="policy rollouts per instance (a GRPO group)")
    max_turns: int = setting(12, env="FLYWHEEL_MAX_TURNS", ge=1,
                             help="turns per episode, everywhere (the teacher's longest path takes 8)")
    augment_per_failure: int = setting(4, env="FLYWHEEL_AUGMENT_PER_FAILURE", ge=0,
                                       help="hard-sample variants generated per failed instance")
    # Each failure yields several variants, so uncapped the rounds grow without end.
    max_carried: int = setting(160, env="FLYWHEEL_MAX_CARRIED", ge=0,
                               help="at most this many of the previous round's kept hard samples enter a round, "
                                    "spread over the failures they came from (0: all)")
    hard_sample_parents: str = setting("failures", env="FLYWHEEL_HARD_SAMPLE_PARENTS",
                                       choices=lambda: HARD_SAMPLE_PARENTS,
                                       help="failures (the flywheel), uniform (the efficacy control: as many "
                                            "parents drawn uniformly, failed or not) or uniform-all (the control "
                                            "uniform in the teacher's worked solutions too: as many of them, of "
                                            "instances drawn uniformly instead of those the policy failed)")
    # A failure is any failed rollout, and at rollout temperature a trained policy fails most
    # of a round that way (benchmarks/limits.py measures it): the aim then barely differs
    # from a uniform draw. A share below 1 keeps only some failures (hard_sample_pick says which);
    # half of them, 4 variants each (as many hard samples as every failure with 2), is the
    # recipe that led the uniform control most (README, *Benchmarks*; +0.02, not significant).
    hard_sample_share: float = setting(0.5, env="FLYWHEEL_HARD_SAMPLE_SHARE", ge=0, le=1,
                                       help="at most this share of the round's played instances (at least one) become "
                                            "hard-sample parents: its failures, in the order hard_sample_pick says "
                                            "(1: every failure; 0: no hard samples); the uniform control draws as many")
    # The worst failures are often out of the model's reach (0 of n rollouts, low partial
    # reward); the nearest ones (some rollouts solved it, or most sub-goals met) are where a
    # few variants may tip it over: the learnability argument of curriculum methods.
    # nearest_per_type: the nearest failures are rarely prohibited actions (the hard gate zeroes
    # their reward), so nearest alone skews the parents' failure mix away from the round's
    # (benchmarks/limits.py: 0.04-0.09 of the parents against 0.14-0.26 of the failures). Giving
    # each type its share did not widen the lead over four seeds (README, *Benchmarks*).
    # nearest_per_domain: rewards are not on one scale across domains (telecom's failures score
    # lowest), so nearest alone starves the domain the policy is worst at of parents and of
    # carried-in instances; each domain gets its share of the failures, ranked within it. Over
    # four seeds that narrowed telecom's deficit and cost the other domains more (README).
    # nearest_domain_scaled: no quotas; a failure's mean reward is read against its domain's
    # played instances (standard score), so a domain's nearest failures rank by how near they
    # are for that domain rather than on one scale for all.
    hard_sample_pick: str = setting("nearest", env="FLYWHEEL_HARD_SAMPLE_PICK", choices=lambda: HARD_SAMPLE_PICKS,
                                    help="which failures a hard_sample_share below 1 keeps: worst (lowest mean "
                                         "rollout reward first), nearest (highest first: the failures the policy "
                                         "came closest to solving), nearest_per_type (the nearest of each failure "
                                         "type, as many of a type as its share of the failures), "
                                         "nearest_per_domain (the same, per domain) or nearest_domain_scaled (nearest "
                                         "by the standard score of the mean reward within the failure's domain)")
    # Off by default: the untrained base solves nothing, so its rollouts made every r000
    # instance a "failure" and the flywheel's first hard samples aimed at nothing in particular.
    first_round_policy_rollouts: bool = setting(
        False, env="FLYWHEEL_FIRST_ROUND_POLICY_ROLLOUTS",
        help="the embedded policy: round r000 also rolls out the untrained base (default false: r000 is the "
             "teacher's rollouts and the SFT cold start only, and the first policy rollouts are r001's, by the SFT "
             "checkpoint, so every round's hard samples are a trained model's failures)")
    eval_per_domain: int = setting(16, env="FLYWHEEL_EVAL_PER_DOMAIN", ge=1,
                                   help="held-out tasks per domain (each also yields branched, adversarial and "
                                        "augmented instances: 16 give 216 over the four packs)")
    eval_seed: int = setting(900_001, env="FLYWHEEL_EVAL_SEED", help="seed of the held-out set; distinct from "
                                                                      "round seeds")
    max_rounds: int = setting(3, env="FLYWHEEL_MAX_ROUNDS", ge=1,
                              help="the round-advance sensor stops after this many rounds")

    _join_domains = field_validator("domains", "domain_files", mode="before")(lambda value: join_list(value))

    @field_validator("domain_files")
    @classmethod
    def _load_domain_files(cls, value: str) -> str:
        # absolute, so Dagster's step processes (and the run's record) name the same files
        paths = [str(Path(p).resolve()) for p in split_list(value)]
        try:
            use_domain_files(paths)
        except DomainFileError as exc:
            raise ValueError(f"a domain file is invalid:\n{exc}") from None
        return ",".join(paths)

    def _loaded_choices(self, name: str) -> list[str]:
        return sorted(registered()) if name == "domains" else []

    def uniform_fixes_seed(self, round_key: str) -> str | None:
        """The seed of the ``uniform-all`` control's draw of the teacher's worked solutions
        (``rft_data``); None for the other settings, which take those of the policy's failures."""
        return f"{self.seed}/{round_key}/uniform-fixes" if self.hard_sample_parents == "uniform-all" else None

    @property
    def domain_file_paths(self) -> tuple[str, ...]:
        return tuple(split_list(self.domain_files))

    @property
    def domain_names(self) -> tuple[str, ...]:
        """The round's domains: those named in ``domains``, then every domain file's."""
        named = split_list(self.domains)
        files = [loaded_domain_name(p) for p in self.domain_file_paths]  # loaded when the setting was checked
        return tuple(named + [n for n in files if n not in named])

    @property
    def pack_names(self) -> tuple[str, ...]:
        """The round's built-in packs (the domain files' domains left out)."""
        return tuple(n for n in self.domain_names if n in DOMAINS)

    @property
    def written_domain_names(self) -> tuple[str, ...]:
        """The round's domain files' domains, whose tasks the LLM world writer writes."""
        return tuple(n for n in self.domain_names if n not in DOMAINS)


def seed_tasks(config: RoundConfig, round_key: str, writer: LLMTaskWriter | None = None, *,
               world_writer: LLMWorldWriter | None = None, teacher: BatchPolicy | None = None,
               user_factory: UserFactory | None = None) -> SeedBatch:
    """Complete tasks and their information-deficient seed instances: the packs' synthesised,
    the domain files' written by the LLM ``world_writer`` (``written_tasks``). With an LLM
    ``writer``, the information-deficient rewrite is the writer's wherever its draft passes
    the check (a required value absent from the instruction, present in the hidden context);
    a refused draft keeps the procedural rewrite and is recorded with its reason."""
    batch = seed_instances(config.pack_names, config.tasks_per_domain, seed=config.seed, round_key=round_key)
    if config.written_domain_names:
        written = write_tasks(config, round_key, world_writer, teacher=teacher, user_factory=user_factory)
        batch.tasks += written.tasks
        batch.instances += written.instances
        batch.writer_rejections += written.writer_rejections
    if writer is None:
        return batch
    instances = []
    for task, procedural in zip(batch.tasks, batch.instances, strict=True):
        rewritten, draft = writer.rewrite(task, round_key=round_key, persona=procedural.persona)
        if rewritten is None:
            batch.writer_rejections.append(rejection(task.domain, "instruction", draft.reason, task_id=task.task_id,
                                                     task_seed=task.seed))
        instances.append(rewritten or procedural)
    batch.instances = instances
    return batch


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


HELDOUT_OPERATORS = ("perturb_values", "persona_injection", "add_branch", "combine_tasks", "adversarial_escalation")


def augmented_heldout(config: RoundConfig, round_key: str, instances: Sequence[TaskInstance],
                      solvers: Sequence[BatchPolicy] | None = None) -> AugmentReport:
    """The held-out set's carried-over-style phase: one verified variant of each seed
    instance, the augmentation operators taken in turn, so the evaluation also measures the
    kind of instance a round carries in from the previous one's failures."""
    seeds = [i for i in instances if i.phase == "seed"]
    plan = [(inst, HELDOUT_OPERATORS[n % len(HELDOUT_OPERATORS)],
             random.Random(f"{config.seed}/{round_key}/held-out-augment/{inst.instance_id}"), {})
            for n, inst in enumerate(seeds)]
    return verified_variants(plan, round_key=round_key, solvers=solvers or default_solvers(),
                             max_turns=config.max_turns)


def select_carried(hard_samples: Sequence[TaskInstance], limit: int, rng: random.Random) -> list[TaskInstance]:
    """At most ``limit`` hard samples (all when ``limit`` is 0), shared out over failure types
    in proportion to how many failed instances each type had (the failure distribution the
    variants came from, ``meta["failure_type"]``), and within a type spread over the parents:
    one variant of every failed instance before a second of any, parents in a seeded order.
    So the cap keeps the round's failure mix and the breadth of what failed, rather than the
    first failures' variants."""
    if not limit or len(hard_samples) <= limit:
        return list(hard_samples)
    by_type: dict[str, dict[str, list[TaskInstance]]] = {}
    for hard in hard_samples:
        parent = hard.parent_ids[0] if hard.parent_ids else hard.instance_id
        by_type.setdefault(hard.meta.get("failure_type", ""), {}).setdefault(parent, []).append(hard)
    quotas = _shares(limit, {kind: len(parents) for kind, parents in by_type.items()},
                     {kind: sum(map(len, parents.values())) for kind, parents in by_type.items()})
    chosen: list[TaskInstance] = []
    for kind in sorted(by_type):
        by_parent = by_type[kind]
        parents = sorted(by_parent)
        rng.shuffle(parents)
        taken: list[TaskInstance] = []
        depth = 0
        while len(taken) < quotas[kind]:
            layer = [by_parent[p][depth] for p in parents if depth < len(by_parent[p])]
            taken += layer[:quotas[kind] - len(taken)]
            depth += 1
        chosen += taken
    keep = {h.instance_id for h in chosen}
    return [h for h in hard_samples if h.instance_id in keep]  # in the hard-samples table's order


def _shares(total: int, weights: dict[str, int], available: dict[str, int]) -> dict[str, int]:
    """``total`` shared out in proportion to ``weights`` (largest remainders, ties by name),
    no share above what is ``available``; what a share cannot take goes to the others."""
    shares = dict.fromkeys(weights, 0)
    left = min(total, sum(available.values()))
    while left:
        open_kinds = [k for k in sorted(weights) if shares[k] < available[k]]
        weight = sum(weights[k] for k in open_kinds)
        exact = {k: left * weights[k] / weight for k in open_kinds}
        grant = {k: min(int(exact[k]), available[k] - shares[k]) for k in open_kinds}
        if not any(grant.values()):  # hand out the remainders one by one, largest first
            ranked = sorted(open_kinds, key=lambda k: (-(exact[k] - int(exact[k])), k))
            grant = dict.fromkeys(ranked[:left], 1)
        for kind, n in grant.items():
            shares[kind] += n
            left -= n
    return shares


def rollouts(config: RoundConfig, instances: Sequence[TaskInstance], policy: BatchPolicy | None,
             teacher: BatchPolicy | None = None, progress: Any = None, *, user_factory: UserFactory | None = None,
             backend_for: BackendFactory | None = None) -> list[Trajectory]:
    """The policy's rollouts (several per instance; none when ``policy`` is None, a cold
    start) and, when given, one teacher rollout per instance, sharing each task's consistency
    cache. ``user_factory`` / ``backend_for`` replace the procedural mock user / tools (the
    LLM world roles)."""
    caches = make_caches(instances, backend_for)
    trajectories = [] if policy is None else run_rollouts(
        instances, policy, samples=config.rollouts_per_instance, max_turns=config.max_turns, caches=caches,
        progress=progress, user_factory=user_factory)
    if teacher is not None:
        trajectories += run_rollouts(instances, teacher, max_turns=config.max_turns, caches=caches,
                                     user_factory=user_factory)
    return trajectories


def rubric_scores(instances: Sequence[TaskInstance], trajectories: Sequence[Trajectory], *,
                  judge: LLMJudge | None = None) -> list[Score]:
    """Predicates first; with ``judge``, then the LLM judge on the items predicates cannot
    decide (both verdicts recorded; an unreadable verdict is flagged, not scored)."""
    by_id = {i.instance_id: i for i in instances}
    scores = [score(by_id[t.instance_id], t) for t in trajectories]
    return judge_scores(by_id, trajectories, scores, judge) if judge is not None else scores


def default_solvers() -> list[BatchPolicy]:
    """Independent solvers for the consistency filter on the embedded default: teacher
    strategies that ask at different times."""
    from flywheel_assets.world.teacher import ScriptedTeacher

    return [ScriptedTeacher("ask_all_first"), ScriptedTeacher("just_in_time")]


def hard_samples(config: RoundConfig, round_key: str, instances: Sequence[TaskInstance],
                 trajectories: Sequence[Trajectory], scores: Sequence[Score],
                 policy_name: str, solvers: Sequence[BatchPolicy] | None = None, *,
                 user_factory: UserFactory | None = None, backend_for: BackendFactory | None = None) -> AugmentReport:
    """Harder, verified variants of the instances the policy failed (or, for the efficacy
    control, of as many instances drawn uniformly: see ``RoundConfig.hard_sample_parents``)."""
    by_id = {i.instance_id: i for i in instances}
    trajectory_of = {t.trajectory_id: t for t in trajectories}
    failed: dict[str, tuple[TaskInstance, Score]] = {}
    failure_types = instance_failure_types(trajectories, scores, policy_name)
    first_score: dict[str, Score] = {}
    rewards: dict[str, list[float]] = {}
    for s in scores:
        if trajectory_of[s.trajectory_id].policy != policy_name:
            continue
        first_score.setdefault(s.instance_id, s)
        rewards.setdefault(s.instance_id, []).append(s.reward)
        if not s.success and s.instance_id not in failed:
            failed[s.instance_id] = (by_id[s.instance_id], s)
    # At least one parent when the share is positive: floored, half of a one-instance round is none.
    limit = max(1, int(config.hard_sample_share * len(first_score))) if config.hard_sample_share > 0 else 0
    domain_of = {i: by_id[i].domain for i in first_score}
    strata = {"nearest_per_type": failure_types, "nearest_per_domain": domain_of}.get(config.hard_sample_pick)
    closeness = {i: sum(r) / len(r) for i, r in rewards.items()}
    if config.hard_sample_pick == "nearest_domain_scaled":
        closeness = domain_standard_scores(closeness, domain_of)
    parents = _chosen_failures(failed, closeness, limit, nearest=config.hard_sample_pick != "worst", types=strata)
    if config.hard_sample_parents != "failures":
        drawn = seeded_draw(f"{config.seed}/{round_key}/uniform-parents", first_score, len(parents))
        parents = [(by_id[i], failed[i][1] if i in failed else first_score[i]) for i in drawn]
    return augment_failures(parents, round_key=round_key, seed=config.seed,
                            solvers=solvers or default_solvers(), per_failure=config.augment_per_failure,
                            failure_types=failure_types, max_turns=config.max_turns, user_factory=user_factory, backend_for=backend_for)


def instance_failure_types(trajectories: Sequence[Trajectory], scores: Sequence[Score],
                           policy_name: str) -> dict[str, str]:
    """Instance id → the failure type of the first of ``policy_name``'s rollouts of it that
    failed (in ``scores``' order), for every instance the policy failed at least once."""
    trajectory_of = {t.trajectory_id: t for t in trajectories}
    types: dict[str, str] = {}
    for s in scores:
        trajectory = trajectory_of[s.trajectory_id]
        if trajectory.policy == policy_name and not s.success and s.instance_id not in types:
            types[s.instance_id] = failure_type(s, trajectory) or "missed_subgoal"
    return types


def domain_standard_scores(values: Mapping[str, float], domain_of: Mapping[str, str]) -> dict[str, float]:
    """Each value as a standard score within its domain: (value − the domain's mean) / the
    domain's population standard deviation (a domain whose values are all equal scores 0)."""
    by_domain: dict[str, list[float]] = {}
    for i, value in values.items():
        by_domain.setdefault(domain_of[i], []).append(value)
    stats = {domain: (statistics.fmean(vs), statistics.pstdev(vs) or 1.0) for domain, vs in by_domain.items()}
    return {i: (value - stats[domain_of[i]][0]) / stats[domain_of[i]][1] for i, value in values.items()}


def _chosen_failures(failed: dict[str, tuple[TaskInstance, Score]], closeness: Mapping[str, float],
                     limit: int, *, nearest: bool = False, types: Mapping[str, str] | None = None
                     ) -> list[tuple[TaskInstance, Score]]:
    """The failures, or when there are more than ``limit``, the ``limit`` with the lowest
    ``closeness`` (their policy rollouts' mean reward, or its domain standard score; ``nearest``:
    the highest), ties by instance id, in the order they failed. With ``types`` (instance id →
    its stratum: failure type or domain) the limit is shared out over the strata in proportion
    to their failures, and each share ranked alone."""
    if len(failed) <= limit:
        return list(failed.values())
    sign = -1 if nearest else 1
    groups: dict[str, list[str]] = {}
    for i in failed:
        groups.setdefault(types[i] if types is not None else "", []).append(i)
    sizes = {kind: len(ids) for kind, ids in groups.items()}
    chosen = {i for kind, quota in _shares(limit, sizes, sizes).items()
              for i in sorted(groups[kind], key=lambda i: (sign * closeness[i], i))[:quota]}
    return [parent for i, parent in failed.items() if i in chosen]
