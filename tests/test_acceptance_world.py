"""Issue-level acceptance for the Mock World engine, over every domain."""

from flywheel_assets.world.domains import DOMAINS
from flywheel_assets.world.metrics import batch_summary
from flywheel_assets.world.rollout import run_rollouts
from flywheel_assets.world.rubric import score, teacher_filter
from flywheel_assets.world.synthesis import seed_instances
from flywheel_assets.world.baselines import DoNothingPolicy, RandomPolicy
from flywheel_assets.world.teacher import ScriptedTeacher


def test_teacher_solves_99_percent_of_2000_instances_and_discards_have_reasons():
    per_domain = -(-2000 // len(DOMAINS))
    batch = seed_instances(sorted(DOMAINS), per_domain, seed=2026, round_key="r000")
    assert len(batch.instances) >= 2000
    trajectories, scores, verdicts = teacher_filter(batch.instances, ScriptedTeacher())
    assert sum(s.reward == 1.0 for s in scores) / len(scores) >= 0.99
    for verdict in verdicts:
        assert verdict["verdict"] in ("KEEP", "DISCARD")
        if verdict["verdict"] == "DISCARD":
            assert verdict["reason"]
    summary = batch_summary(trajectories, scores)
    assert summary["terminations"].get("max_turns", 0) <= 0.01 * len(scores)


def test_random_and_do_nothing_policies_score_near_zero_without_crashing():
    batch = seed_instances(sorted(DOMAINS), 40, seed=7, round_key="r000")
    for policy in (RandomPolicy(seed=1), DoNothingPolicy()):
        trajectories = run_rollouts(batch.instances, policy, samples=2, max_turns=12)
        scores = [score(i, t) for i, t in zip([i for i in batch.instances for _ in range(2)], trajectories)]
        summary = batch_summary(trajectories, scores)
        assert summary["episodes"] == 2 * len(batch.instances)
        assert summary["reward_mean"] < 0.05 and summary["pass_rate"] == 0.0, (policy.name, summary)
