"""The cold start before the first policy rollouts (``first_round_policy_rollouts=false``):
round r000 of the embedded policy is the teacher's rollouts only, so its hard samples are no
untrained base's failures; another policy, or r000 by default, still plays."""

from dagster import DagsterInstance

from flywheel_assets.runner import materialize_rounds, run_config
from flywheel_assets.store import Warehouse

ROUND = {"domains": "retail", "tasks_per_domain": 2, "rollouts_per_instance": 2, "backtranslated_per_tree": 1}


def _round(tmp_path, policy: str, first_round_policy_rollouts: bool) -> Warehouse:
    store = Warehouse(tmp_path / f"{policy}-{first_round_policy_rollouts}.duckdb")
    config = run_config(overrides={
        "warehouse": {"path": str(store.path)}, "policy": {"name": policy},
        "training": {"checkpoint_dir": str(tmp_path / "checkpoints")},
        "round_config": {**ROUND, "first_round_policy_rollouts": first_round_policy_rollouts}}, log_level="WARNING")
    [outcome] = materialize_rounds(DagsterInstance.ephemeral(), ["r000"], config, store, report=lambda _: None,
                                   train=False)
    assert outcome.success, outcome.error
    return store


def roles(store: Warehouse) -> dict[str, int]:
    return dict(store.query("SELECT role, count(*) FROM rollouts WHERE round = 'r000' GROUP BY role").iter_rows())


def test_a_cold_start_rolls_out_only_the_teacher_and_makes_no_hard_samples(tmp_path):
    store = _round(tmp_path, "embedded", False)
    instances = store.records("SELECT count(*) AS n FROM task_instances WHERE round = 'r000'")[0]["n"]
    assert roles(store) == {"teacher": instances}
    assert store.records("SELECT count(*) AS n FROM hard_samples WHERE round = 'r000'")[0]["n"] == 0
    figures = dict(store.query("SELECT metric, value FROM round_metrics WHERE round = 'r000' "
                               "AND stage = 'rubric_scores'").iter_rows())
    assert figures["teacher_pass_rate"] == 1.0
    assert "pass_rate" not in figures and "failures.missed_subgoal" not in figures  # no policy played


def test_without_the_cold_start_or_with_another_policy_r000_plays_the_policy(tmp_path):
    store = _round(tmp_path, "flaky-teacher", False)  # only the trained embedded model has a cold start
    instances = store.records("SELECT count(*) AS n FROM task_instances WHERE round = 'r000'")[0]["n"]
    assert roles(store) == {"policy": 2 * instances, "teacher": instances}
