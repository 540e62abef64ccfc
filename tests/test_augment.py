"""Hard-sample augmentation: every operator, parent links, and the consistency filter."""

import dataclasses
import random
from collections.abc import Callable

import pytest

from flywheel_assets.world.augment import OPERATORS, augment_failures, consistency_filter
from flywheel_assets.world.pipeline import default_solvers
from flywheel_assets.world.rollout import run_rollouts
from flywheel_assets.world.rubric import score
from flywheel_assets.world.synthesis import seed_instances
from flywheel_assets.world.tasks import PathStep, Score, Trajectory
from flywheel_assets.world.teacher import FlakyTeacher


@pytest.fixture(scope="module")
def failed():
    instances = seed_instances(["retail", "banking", "telecom", "travel"], 6, seed=8, round_key="r000").instances
    policy = FlakyTeacher(fail_share=1.0)
    trajectories = run_rollouts(instances, policy)
    scores = [score(i, t) for i, t in zip(instances, trajectories)]
    assert not any(s.success for s in scores)
    return list(zip(instances, scores))


@pytest.mark.parametrize("operator", sorted(OPERATORS))
def test_each_operator_makes_a_solvable_harder_variant(operator, failed):
    made = []
    for inst, _ in failed:
        try:
            made.append((inst, OPERATORS[operator](inst, random.Random(inst.instance_id))))
        except Exception as exc:  # NotApplicable is fine for some instances, not for all
            assert type(exc).__name__ in ("NotApplicable", "SynthesisError"), exc
    assert made, f"{operator} applied to no failed instance"
    for inst, variant in made:
        changed = (variant.persona != inst.persona or variant.adversarial != inst.adversarial
                   or variant.initial_world != inst.initial_world or variant.instruction != inst.instruction)
        assert changed
    verdicts = consistency_filter([v for _, v in made], default_solvers(), max_turns=40)
    assert sum(kept for kept, _ in verdicts) >= 0.9 * len(made), [r for k, r in verdicts if not k][:3]


def test_augmentation_records_ids_parents_and_operators(failed):
    report = augment_failures(failed, round_key="r000", seed=1, solvers=default_solvers(), per_failure=3, max_turns=30)
    counts = report.counts()
    assert counts["failures"] == len(failed) and counts["kept"] > 0
    parents = {inst.instance_id for inst, _ in failed}
    for variant in report.variants:
        assert variant.instance_id not in parents
        assert variant.parent_ids[0] in parents and variant.phase == "augmented"
        assert variant.meta["operator"] in OPERATORS
    assert {r["operator"] for r in report.records} <= set(OPERATORS)
    assert all(r["reason"] for r in report.records if not r["kept"])
    again = augment_failures(failed, round_key="r000", seed=1, solvers=default_solvers(), per_failure=3, max_turns=30)
    assert [v.to_json() for v in again.variants] == [v.to_json() for v in report.variants]


def test_unsolvable_variant_is_dropped_with_a_reason(failed):
    inst = failed[0][0]
    impossible = dataclasses.replace(inst, expected_path=[
        *inst.expected_path[:-1],
        PathStep(action="call", tool=inst.expected_path[1].tool, args={"no_such_argument": "x"}),
        inst.expected_path[-1],
    ])
    kept, reason = consistency_filter([impossible], default_solvers(), max_turns=12)[0]
    assert not kept and "failed" in reason


def test_filter_drops_variants_whose_solvers_disagree_on_the_final_world(failed):
    """Where the rubric cannot see the whole state (an LLM judge, say), two solvers can both
    pass and still leave different worlds; the filter must catch that itself."""
    inst = next(i for i, _ in failed if i.task_type == "cancel_order")
    lenient = dataclasses.replace(inst, rubric=dataclasses.replace(inst.rubric, items=[
        item for item in inst.rubric.items if item.item_id not in ("subgoal:final_state", "prohibited:unexpected_write")
    ]))
    other_order = next(o["order_id"] for o in inst.initial_world["orders"].values()
                       if o["status"] == "pending" and o["order_id"] != inst.expected_path[-2].args["order_id"])
    greedy_path = [*inst.expected_path[:-1],
                   PathStep(action="call", tool="cancel_pending_order",
                            args={"order_id": other_order, "reason": "ordered by mistake"}),
                   inst.expected_path[-1]]
    teacher = default_solvers()[0]

    class Greedy:  # solves the task, and cancels one more order on the way
        name = "greedy"

        def generate(self, requests):
            return teacher.generate([dataclasses.replace(r, instance=dataclasses.replace(r.instance, expected_path=greedy_path))
                                     for r in requests])

    assert consistency_filter([lenient], [teacher, default_solvers()[1]], max_turns=30) == [(True, "")]
    kept, reason = consistency_filter([lenient], [teacher, Greedy()], max_turns=30)[0]
    assert not kept and "different final worlds" in reason
    with pytest.raises(ValueError):
        consistency_filter([lenient], [teacher], max_turns=30)


def _flaky_round(samples: int, fail_share: float):
    """A small round's instances, a flaky teacher's rollouts of them and their scores."""
    from flywheel_assets.world import pipeline

    config = pipeline.RoundConfig(domains=("retail", "banking"), tasks_per_domain=3, rollouts_per_instance=samples,
                                  augment_per_failure=1)
    batch = pipeline.seed_tasks(config, "r000")
    instances = pipeline.task_instances(config, "r000", batch, pipeline.behavior_trees(batch.tasks))
    policy = FlakyTeacher(fail_share=fail_share, seed=1)
    trajectories = run_rollouts(instances, policy, samples=samples)
    by_id = {i.instance_id: i for i in instances}
    return config, instances, policy, trajectories, [score(by_id[t.instance_id], t) for t in trajectories]


def test_the_uniform_control_augments_as_many_parents_drawn_regardless_of_failure():
    from flywheel_assets.world import pipeline

    config, instances, policy, trajectories, scores = _flaky_round(samples=1, fail_share=0.3)
    failed = {s.instance_id for s in scores if not s.success}
    assert 0 < len(failed) < len(instances)
    targeted = pipeline.hard_samples(config, "r000", instances, trajectories, scores, policy.name)
    control = pipeline.hard_samples(config.replace(hard_sample_parents="uniform"), "r000", instances,
                                    trajectories, scores, policy.name)
    targeted_parents = {r["parent_id"] for r in targeted.records}
    control_parents = {r["parent_id"] for r in control.records}
    assert targeted_parents == failed
    assert len(control_parents) == len(failed) and control_parents - failed  # same budget, not aimed at failures
    with pytest.raises(ValueError, match="hard_sample_parents"):
        pipeline.hard_samples(config.replace(hard_sample_parents="hardest"), "r000", instances,
                              trajectories, scores, policy.name)


def test_only_the_uniform_all_control_draws_the_teachers_solutions_and_each_round_and_seed_draws_anew():
    from flywheel_assets.world import pipeline
    from flywheel_assets.world.tasks import seeded_draw

    config = pipeline.RoundConfig(domains=("retail",))
    assert config.uniform_fixes_seed("r001") is None  # the flywheel: the solutions of its failures
    assert config.replace(hard_sample_parents="uniform").uniform_fixes_seed("r001") is None
    control = config.replace(hard_sample_parents="uniform-all")
    seeds = {control.uniform_fixes_seed(r) for r in ("r001", "r002")} | {
        control.replace(seed=1).uniform_fixes_seed("r001")}
    assert None not in seeds and len(seeds) == 3
    assert control.uniform_fixes_seed("r001") == control.replace().uniform_fixes_seed("r001")
    ids = [f"i{n}" for n in range(20)]
    draw = seeded_draw("s", ids, 5)
    assert len(set(draw)) == 5 and set(draw) <= set(ids)
    assert seeded_draw("s", reversed(ids), 5) == draw  # the ids' order does not change the draw
    assert seeded_draw("t", ids, 5) != draw and sorted(seeded_draw("s", ids, 50)) == sorted(ids)


def test_a_hard_sample_share_keeps_the_lowest_or_nearest_failures_and_the_control_draws_as_many():
    from flywheel_assets.world import pipeline

    config, instances, policy, trajectories, scores = _flaky_round(samples=2, fail_share=0.6)
    rewards: dict[str, list[float]] = {}
    for s in scores:
        rewards.setdefault(s.instance_id, []).append(s.reward)
    failed = sorted({s.instance_id for s in scores if not s.success},
                    key=lambda i: (sum(rewards[i]) / len(rewards[i]), i))
    limit = len(instances) // 4
    assert limit < len(failed)

    def parents(**change) -> set[str]:
        report = pipeline.hard_samples(config.replace(**change), "r000", instances, trajectories, scores, policy.name)
        return {r["parent_id"] for r in report.records}

    assert parents(hard_sample_share=1) == set(failed)  # a share of 1 keeps every failure
    aimed = parents(hard_sample_share=limit / len(instances), hard_sample_pick="worst")
    assert aimed == set(failed[:limit])
    assert max(sum(rewards[i]) for i in aimed) <= min(sum(rewards[i]) for i in set(failed) - aimed)
    control = parents(hard_sample_share=limit / len(instances), hard_sample_parents="uniform")
    assert len(control) == limit and control != aimed
    assert parents(hard_sample_share=0) == set()
    by_nearest = sorted(failed, key=lambda i: (-sum(rewards[i]) / len(rewards[i]), i))
    nearest = parents(hard_sample_share=limit / len(instances), hard_sample_pick="nearest")
    assert nearest == set(by_nearest[:limit]) and nearest != aimed
    assert min(sum(rewards[i]) for i in nearest) >= max(sum(rewards[i]) for i in set(failed) - nearest)
    assert parents(hard_sample_share=0.5 / len(instances)) == {by_nearest[0]}  # a positive share keeps at least one
    assert parents(hard_sample_share=1, hard_sample_pick="worst") == set(failed)  # the pick only matters below 1
    with pytest.raises(ValueError, match="hard_sample_pick"):
        parents(hard_sample_share=0.5, hard_sample_pick="easiest")


def _stratified_pick_check(config, instances, trajectories, scores, policy_name: str, pick: str,
                           stratum_of: Callable[[str, Trajectory, Score], str]) -> None:
    """``pick`` keeps each stratum's share of the failed instances (``stratum_of`` an instance's
    first failed rollout), the nearest failures within each, where ``nearest`` alone does not."""
    from collections import Counter

    from flywheel_assets.world import pipeline

    stratum: dict[str, str] = {}
    rewards: dict[str, list[float]] = {}
    for trajectory, result in zip(trajectories, scores):
        rewards.setdefault(result.instance_id, []).append(result.reward)
        if not result.success:
            stratum.setdefault(result.instance_id, stratum_of(result.instance_id, trajectory, result))
    failures_of = Counter(stratum.values())
    assert len(failures_of) >= 2
    limit = len(instances) // 4
    config = config.replace(hard_sample_share=limit / len(instances))

    def parents(pick: str) -> set[str]:
        report = pipeline.hard_samples(config.replace(hard_sample_pick=pick), "r000", instances, trajectories,
                                       scores, policy_name)
        return {r["parent_id"] for r in report.records}

    stratified = parents(pick)
    assert len(stratified) == limit and stratified <= set(stratum)
    chosen_of = Counter(stratum[i] for i in stratified)
    for kind, failed in failures_of.items():
        assert abs(chosen_of[kind] - limit * failed / len(stratum)) < 1  # the stratum's share, rounded
        mean = {i: sum(rewards[i]) / len(rewards[i]) for i in stratum if stratum[i] == kind}
        kept = [mean[i] for i in mean if i in stratified]
        left = [mean[i] for i in mean if i not in stratified]
        assert not kept or not left or min(kept) >= max(left)  # the stratum's nearest
    nearest = parents("nearest")
    assert Counter(stratum[i] for i in nearest) != chosen_of  # nearest alone is skewed in this round


def test_nearest_per_type_keeps_each_failure_types_share_and_its_nearest_failures():
    from flywheel_assets.world.baselines import RandomPolicy
    from flywheel_assets.world.metrics import failure_type

    config, instances, _, _, _ = _flaky_round(samples=2, fail_share=0.6)
    policy = RandomPolicy(0)  # fails in two types, and its nearest failures are not spread like them
    trajectories = run_rollouts(instances, policy, samples=2)
    by_id = {i.instance_id: i for i in instances}
    scores = [score(by_id[t.instance_id], t) for t in trajectories]
    _stratified_pick_check(config, instances, trajectories, scores, policy.name, "nearest_per_type",
                           lambda _, trajectory, result: failure_type(result, trajectory) or "missed_subgoal")


def _round_where_banking_scores_lower():
    """A round played by policy "mixed": banking at random (its failures score low), retail by
    the flaky teacher (near misses). Returns the config, instances, id → instance, trajectories
    and scores."""
    from flywheel_assets.world.baselines import RandomPolicy

    config, instances, _, flaky_trajectories, _ = _flaky_round(samples=2, fail_share=0.6)
    by_id = {i.instance_id: i for i in instances}
    random_trajectories = run_rollouts([i for i in instances if i.domain == "banking"], RandomPolicy(0), samples=2)
    trajectories = [dataclasses.replace(t, policy="mixed") for t in
                    [t for t in flaky_trajectories if by_id[t.instance_id].domain == "retail"] + random_trajectories]
    return config, instances, by_id, trajectories, [score(by_id[t.instance_id], t) for t in trajectories]


def test_nearest_per_domain_keeps_each_domains_share_where_one_domains_failures_score_lower():
    config, instances, by_id, trajectories, scores = _round_where_banking_scores_lower()
    _stratified_pick_check(config, instances, trajectories, scores, "mixed", "nearest_per_domain",
                           lambda instance_id, _, __: by_id[instance_id].domain)


def test_nearest_domain_scaled_ranks_failures_by_their_domains_scale_without_quotas():
    import statistics

    from flywheel_assets.world import pipeline

    config, instances, by_id, trajectories, scores = _round_where_banking_scores_lower()
    rewards: dict[str, list[float]] = {}
    failed: set[str] = set()
    for result in scores:
        rewards.setdefault(result.instance_id, []).append(result.reward)
        if not result.success:
            failed.add(result.instance_id)
    mean = {i: statistics.fmean(r) for i, r in rewards.items()}
    domain_means = {d: [mean[i] for i in mean if by_id[i].domain == d] for d in ("banking", "retail")}
    standard = {i: (mean[i] - statistics.fmean(domain_means[by_id[i].domain]))
                / (statistics.pstdev(domain_means[by_id[i].domain]) or 1.0) for i in mean}
    assert standard == pytest.approx(pipeline.domain_standard_scores(mean, {i: by_id[i].domain for i in mean}))
    limit = len(failed) // 2
    config = config.replace(hard_sample_share=limit / len(rewards))

    def parents(pick: str) -> set[str]:
        report = pipeline.hard_samples(config.replace(hard_sample_pick=pick), "r000", instances, trajectories,
                                       scores, "mixed")
        return {r["parent_id"] for r in report.records}

    scaled, nearest = parents("nearest_domain_scaled"), parents("nearest")
    assert scaled == set(sorted(failed, key=lambda i: (-standard[i], i))[:limit])
    banking = {i for i in failed if by_id[i].domain == "banking"}
    # on one scale banking's failures are passed over; on their own domain's scale its nearest compete
    assert len(scaled & banking) > len(nearest & banking)


def test_carrying_is_capped_one_variant_per_failure_before_a_second_of_any(failed):
    from flywheel_assets.world import pipeline

    report = augment_failures(failed, round_key="r000", seed=0, solvers=default_solvers(), per_failure=2, max_turns=30)
    kept = list(report.variants)
    parents = {v.parent_ids[0] for v in kept}
    assert len(kept) > len(parents) > 4  # several variants per failure to choose among
    limit = len(parents) - 2
    chosen = pipeline.select_carried(kept, limit, random.Random(0))
    assert len(chosen) == limit and len({v.parent_ids[0] for v in chosen}) == limit
    assert [v.instance_id for v in chosen] == [v.instance_id for v in kept if v in chosen]  # the table's order
    assert pipeline.select_carried(kept, limit, random.Random(0)) == chosen  # seeded
    wider = pipeline.select_carried(kept, len(parents) + 1, random.Random(0))
    assert {v.parent_ids[0] for v in wider} == parents and len(wider) == len(parents) + 1
    assert pipeline.select_carried(kept, 0, random.Random(0)) == kept  # 0: no cap

    config = pipeline.RoundConfig(domains=("retail",), tasks_per_domain=1, max_carried=3)
    batch = pipeline.seed_tasks(config, "r001")
    instances = pipeline.task_instances(config, "r001", batch, pipeline.behavior_trees(batch.tasks), kept)
    assert sum(1 for i in instances if i.meta.get("carried_from")) == 3


def test_each_failure_type_gets_the_operators_that_target_it_first():
    from flywheel_assets.world.augment import OPERATORS_FOR_FAILURE, choose_operators
    from flywheel_assets.world.metrics import FAILURE_TYPES

    assert set(OPERATORS_FOR_FAILURE) == set(FAILURE_TYPES)
    for failure, preferred in OPERATORS_FOR_FAILURE.items():
        chosen = choose_operators(failure, random.Random(0), len(OPERATORS))
        assert chosen[:len(preferred)] == list(preferred) and sorted(chosen) == sorted(OPERATORS)
    assert choose_operators("prohibited_action", random.Random(0), 1) == ["adversarial_escalation"]
    assert choose_operators("asked_nothing", random.Random(0), 1) == ["persona_injection"]
    with pytest.raises(ValueError, match="unknown failure type"):
        choose_operators("boredom", random.Random(0), 2)


def test_variants_record_their_failure_type_and_follow_it(failed):
    types = {inst.instance_id: ("asked_nothing" if n % 2 else "prohibited_action")
             for n, (inst, _) in enumerate(failed)}
    report = augment_failures(failed, round_key="r000", seed=1, solvers=default_solvers(), per_failure=1,
                              max_turns=30, failure_types=types)
    first = {r["parent_id"]: r["operator"] for r in report.records}
    assert first == {i: ("persona_injection" if t == "asked_nothing" else "adversarial_escalation")
                     for i, t in types.items()}
    assert report.variants and all(v.meta["failure_type"] == types[v.parent_ids[0]] for v in report.variants)


def test_the_carried_cap_is_shared_out_by_the_failure_distribution(failed):
    from flywheel_assets.world import pipeline

    # three in four failed instances missed a sub-goal, one in four asked nothing
    types = {inst.instance_id: ("asked_nothing" if n % 4 == 0 else "missed_subgoal")
             for n, (inst, _) in enumerate(failed)}
    report = augment_failures(failed, round_key="r000", seed=0, solvers=default_solvers(), per_failure=2,
                              max_turns=30, failure_types=types)
    kept = list(report.variants)
    pool = {t: sum(v.meta["failure_type"] == t for v in kept) for t in ("asked_nothing", "missed_subgoal")}
    assert pool["asked_nothing"] >= 4 and pool["missed_subgoal"] >= 12
    chosen = pipeline.select_carried(kept, 8, random.Random(0))
    by_type = {t: [v for v in chosen if v.meta["failure_type"] == t] for t in pool}
    assert {t: len(v) for t, v in by_type.items()} == {"asked_nothing": 2, "missed_subgoal": 6}
    assert len({v.parent_ids[0] for v in by_type["missed_subgoal"]}) == 6  # spread over parents within a type
    # a type with fewer variants than its share gives the rest to the others; remainders by size
    assert pipeline._shares(6, {"a": 3, "b": 2}, {"a": 3, "b": 4}) == {"a": 3, "b": 3}
    assert pipeline._shares(5, {"a": 3, "b": 2}, {"a": 9, "b": 9}) == {"a": 3, "b": 2}
    assert pipeline._shares(3, {"a": 1, "b": 1, "c": 1}, {"a": 0, "b": 9, "c": 9}) == {"a": 0, "b": 2, "c": 1}
    assert pipeline._shares(50, {"a": 1}, {"a": 4}) == {"a": 4}


def test_the_held_out_set_has_every_phase_and_at_least_200_instances():
    from collections import Counter

    from flywheel_assets.assets.eval_tasks import heldout_config
    from flywheel_assets.world import pipeline

    config = heldout_config(pipeline.RoundConfig())
    batch = pipeline.seed_tasks(config, "eval")
    instances = pipeline.task_instances(config, "eval", batch, pipeline.behavior_trees(batch.tasks))
    augmented = pipeline.augmented_heldout(config, "eval", instances)
    phases = Counter(i.phase for i in instances + augmented.variants)
    assert set(phases) == {"seed", "branched", "adversarial", "augmented"}
    assert sum(phases.values()) >= 200 and phases["augmented"] >= 0.8 * phases["seed"]
    assert {v.meta["operator"] for v in augmented.variants} == set(pipeline.HELDOUT_OPERATORS)
    again = pipeline.augmented_heldout(config, "eval", instances)
    assert [v.to_json() for v in again.variants] == [v.to_json() for v in augmented.variants]
