"""Held-out evaluation: τ²'s pass^k, grouping by domain and phase."""

import pytest

from flywheel_assets.world import pipeline
from flywheel_training.evals.heldout import evaluate, pass_hat_k
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


def test_pass_k_falls_with_k_for_an_inconsistent_policy(heldout):
    result = evaluate(FlakyTeacher(fail_share=0.3), heldout, trials=3, max_turns=pipeline.RoundConfig().max_turns).overall()
    assert 0.0 < result["pass^3"] < result["pass^1"] < 1.0
