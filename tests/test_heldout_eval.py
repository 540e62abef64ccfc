"""Held-out evaluation: τ²'s pass^k, grouping by domain and phase."""

import pytest

from flywheel_assets.world import pipeline
from flywheel_training.evals.heldout import bootstrap_ci, evaluate, pass_hat_k
from flywheel_assets.world.baselines import DoNothingPolicy
from flywheel_assets.world.teacher import FlakyTeacher
from flywheel_assets.world.teacher import ScriptedTeacher


def test_pass_hat_k_matches_the_combinatorial_definition():
    assert pass_hat_k([4, 0], trials=4, k=1) == 0.5
    assert pass_hat_k([2], trials=4, k=2) == pytest.approx(1 / 6)  # C(2,2)/C(4,2)
    assert pass_hat_k([3], trials=4, k=4) == 0.0
    assert pass_hat_k([4], trials=4, k=4) == 1.0
    with pytest.raises(ValueError):
        pass_hat_k([1], trials=2, k=3)


@pytest.fixture(scope="module")
def heldout():
    config = pipeline.RoundConfig(tasks_per_domain=2, backtranslated_per_tree=1, adversarial_share=0.5)
    seed = pipeline.seed_tasks(config, "eval")
    return pipeline.task_instances(config, "eval", seed, pipeline.behavior_trees(seed.tasks))


def test_teacher_passes_everything_and_do_nothing_nothing(heldout):
    best = evaluate(ScriptedTeacher(), heldout, trials=2, max_turns=pipeline.RoundConfig().max_turns)
    worst = evaluate(DoNothingPolicy(), heldout, trials=2, max_turns=pipeline.RoundConfig().max_turns)
    assert best.overall()["pass^1"] == 1.0 and best.overall()["pass^2"] == 1.0
    assert worst.overall()["pass^1"] == 0.0 and worst.overall()["reward_mean"] == 0.0
    groups = {r["group"] for r in best.rows}
    assert {"domain:retail", "domain:travel", "phase:linear", "phase:branched"} <= groups


def test_the_greedy_episode_is_scored_on_its_own_beside_the_sampled_trials(heldout):
    turns = pipeline.RoundConfig().max_turns
    result = evaluate(DoNothingPolicy(), heldout, trials=2, max_turns=turns, greedy_policy=ScriptedTeacher())
    overall = result.overall()
    assert overall["pass^1"] == 0.0 and overall["greedy"] == 1.0 and overall["greedy_ci"] == (1.0, 1.0)
    assert len(result.greedy_trajectories) == len(heldout) and len(result.trajectories) == 2 * len(heldout)
    assert set(overall["greedy_successes"].values()) == {1}
    assert all(r["greedy"] == 1.0 for r in result.rows)
    assert "greedy" not in evaluate(DoNothingPolicy(), heldout, trials=1, max_turns=turns).overall()


def test_pass_k_falls_with_k_for_an_inconsistent_policy(heldout):
    result = evaluate(FlakyTeacher(fail_share=0.3), heldout, trials=3, max_turns=pipeline.RoundConfig().max_turns).overall()
    assert 0.0 < result["pass^3"] < result["pass^1"] < 1.0
    low, high = result["pass^1_ci"]
    assert low < result["pass^1"] < high  # a mixed record has an interval around its figure
    assert result["pass^3_ci"][0] <= result["pass^3"] <= result["pass^3_ci"][1]


def test_bootstrap_intervals_are_seeded_cover_the_mean_and_narrow_with_more_tasks():
    few = [1, 0, 0, 1, 0] * 4
    many = few * 25
    assert bootstrap_ci(few, seed="all/1") == bootstrap_ci(list(few), seed="all/1")  # no wall clock, no global RNG
    low, high = bootstrap_ci(few, seed="all/1")
    assert low < 0.4 < high
    wide, narrow = high - low, bootstrap_ci(many, seed="all/1")[1] - bootstrap_ci(many, seed="all/1")[0]
    assert narrow < wide / 3  # the interval shrinks about as 1/sqrt(tasks): 25x the tasks, ~1/5 the width
    assert bootstrap_ci([1.0] * 30, seed="x") == (1.0, 1.0) and bootstrap_ci([], seed="x") == (0.0, 0.0)
