"""Complete rounds through Dagster: rollouts of the embedded model, a trained checkpoint per
round (SFT cold start, then RFT + GRPO from the previous one) and its held-out evaluation.
Shrunk by config so two rounds fit the default suite."""

from collections import Counter
from pathlib import Path

import pytest
from dagster import DagsterInstance, Failure

from flywheel_assets.assets.checkpoint_source import checkpoint_for_round
from flywheel_assets.assets.common import summary_figures
from flywheel_assets.assets.stage8_evaluation import _figures
from flywheel_assets.heldout_report import heldout_rows, plot_heldout
from flywheel_assets.resources import TrainingResource
from flywheel_assets.runner import materialize_eval_tasks, materialize_rounds, run_config, summarize
from flywheel_assets.store import Warehouse, trace_lineage
from flywheel_training.checkpoints import folder_sha256
from flywheel_training.evals.heldout import EvalResult
from support.benchmarks import load_benchmark

TINY_TRAINING = {"sft_steps": 6, "rft_steps": 2, "grpo_steps": 1, "max_new_tokens": 24, "eval_trials": 2,
                 "base_induction_steps": 4, "base_recall_steps": 4}


def test_round_1_without_round_0s_checkpoint_fails_naming_it(tmp_path):
    store = Warehouse(tmp_path / "w.duckdb")
    store.ensure_schema()
    with pytest.raises(Failure, match="partition r000 of policy_checkpoint has not been materialised"):
        checkpoint_for_round(store, "r001", TrainingResource(checkpoint_dir=str(tmp_path / "ckpt")))


def test_a_rounds_log_line_prints_its_rates_to_three_decimals_as_the_table_does():
    # 151 successes of 432 trials is 0.34954: the table prints 0.350, and so must the log line
    row = {"group": "all", "tasks": 216, "pass^1": 151 / 432, "pass^2": 0.3, "pass^1_ci": (0.29971, 0.40046),
           "reward_mean": 0.5, "reward_mean_ci": (0.4, 0.6)}
    figures = {f"evaluations.{k}": v for k, v in _figures(EvalResult(2, [row], [], []), 2, "").items()}
    assert "held-out pass^1 0.350 [95% CI 0.300–0.400]" in summarize(figures)
    rollouts = summary_figures({"pass_rate": 151 / 432}, ["pass_rate"], "rubric_scores.")
    assert "policy pass rate 0.350" in summarize(rollouts)
    assert f"{row['pass^1']:.3f}" == "0.350"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    store = Warehouse(root / "warehouse.duckdb")
    config = run_config(overrides={"warehouse": {"path": str(store.path)}, "policy": {"name": "embedded"},
                         "training": {**TINY_TRAINING, "checkpoint_dir": str(root / "checkpoints")},
                         # r000 played by the untrained base too (the cold start has its own tests)
                         "round_config": {"tasks_per_domain": 1, "rollouts_per_instance": 2, "max_turns": 8,
                                          "eval_per_domain": 1, "backtranslated_per_tree": 1,
                                          "first_round_policy_rollouts": True},
                         "external_eval": {"enabled": True, "benchmarks": "bfcl", "bfcl_categories": "base",
                                           "external_limit": 1}}, log_level="WARNING")
    instance = DagsterInstance.ephemeral()
    assert materialize_eval_tasks(instance, config, report=lambda _: None)
    outcomes = materialize_rounds(instance, ["r000", "r001"], config, store, report=lambda _: None, train=True)
    assert [(o.round, o.success, o.error) for o in outcomes] == [("r000", True, ""), ("r001", True, "")]
    return root, store


def test_each_round_trains_a_checkpoint_from_the_previous_one(trained):
    _, store = trained
    [first] = store.read_round("policy_checkpoints", "r000")
    [second] = store.read_round("policy_checkpoints", "r001")
    assert first["kind"] == "sft" and first["base_checkpoint"] is None and first["base_sha256"]
    # training runs by step count: every planned stage of the continuation ran, GRPO first
    assert second["base_checkpoint"] == first["checkpoint_id"] and second["kind"] == "grpo+rft"
    assert [(s["stage"], s["steps"]) for s in first["plan"]["stages"]] == [("sft", 6)]
    assert [(s["stage"], s["steps"], s.get("cut_by_time_cap")) for s in second["plan"]["executed"]] == [
        ("grpo", 1, False), ("rft", 2, False)]
    for row in (first, second):
        assert folder_sha256(row["path"]) == row["checkpoint_id"]
        assert (Path(row["path"]) / "config.json").exists()
    assert first["data_counts"]["teacher_trajectories"] > 0 and first["losses"]
    assert "grpo_groups" in second["data_counts"]
    # the last logged loss is a round figure; r001's 2 RFT steps log none (every 5th step logs), so it has none
    figures = {(r, m): v for r, m, v in store.query("SELECT round, metric, value FROM round_metrics "
                                                     "WHERE stage = 'policy_checkpoints'").iter_rows()}
    assert figures[("r000", "final_loss")] == pytest.approx(first["losses"][-1], abs=1e-3)
    assert not second["losses"] and ("r001", "final_loss") not in figures
    # round 1 was played by round 0's checkpoint, round 0 by the base
    policies = {r["policy"] for r in store.read_round("rollouts", "r001") if r["role"] == "policy"}
    assert policies == {f"embedded:{first['checkpoint_id'][:12]}"}
    assert {r["policy"] for r in store.read_round("rollouts", "r000") if r["role"] == "policy"} == {"embedded:base"}
    assert [r["parent_id"] for r in trace_lineage(store, second["checkpoint_id"]).to_dicts()][:1] == [first["checkpoint_id"]]


def test_each_round_is_evaluated_on_the_held_out_set_after_the_base(trained):
    root, store = trained
    rows = heldout_rows(store)
    assert [(r["round"], r["kind"]) for r in rows] == [("base", "base"), ("r000", "sft"), ("r001", rows[2]["kind"])]
    for r in rows:
        assert r["k"] == 2 and r["tasks"] >= 4 and 0 <= r["pass_k"] <= r["pass_1"] <= 1
    groups = {r["group_name"] for r in store.read_round("evaluations", "r001")}
    assert {"all", "domain:retail", "phase:linear", "phase:branched", "phase:adversarial"} <= groups
    [first] = store.read_round("policy_checkpoints", "r000")
    subjects = {(r["subject"], r["checkpoint_id"]) for r in store.read_round("evaluations", "r000")}
    assert subjects == {("checkpoint", first["checkpoint_id"]), ("base", first["base_sha256"])}
    assert {r["subject"] for r in store.read_round("evaluations", "r001")} == {"checkpoint"}
    assert [r["round"] for r in heldout_rows(store, "phase:linear")] == ["base", "r000", "r001"]
    metrics = store.records("SELECT round, metric FROM round_metrics WHERE stage = 'evaluations'")
    assert {"pass_1", "pass_k", "reward_mean", "base.pass_1"} <= {m["metric"] for m in metrics if m["round"] == "r000"}
    assert "base.pass_1" not in {m["metric"] for m in metrics if m["round"] == "r001"}
    # the greedy episode: one per task, beside the sampled trials, with its own interval
    for r in rows:
        assert r["greedy_pass_1_low"] <= r["greedy_pass_1"] <= r["greedy_pass_1_high"]
    assert "greedy_pass_1" in {m["metric"] for m in metrics if m["round"] == "r001"}
    [overall] = [r for r in store.read_round("evaluations", "r001") if r["group_name"] == "all"]
    assert len(overall["row"]["greedy_successes"]) == overall["tasks"]
    assert overall["greedy_pass_1"] == sum(overall["row"]["greedy_successes"].values()) / overall["tasks"]
    # the round's log line reads round_metrics: its figures are the evaluation's to six digits
    figures = dict(store.query("SELECT metric, value FROM round_metrics WHERE round = 'r001' "
                               "AND stage = 'evaluations'").iter_rows())
    for column in ("pass_1", "pass_1_low", "pass_1_high", "pass_k", "greedy_pass_1"):
        assert figures[column] == round(overall[column], 6)
    assert plot_heldout(rows, root / "heldout.png").stat().st_size > 1000


def test_without_evaluate_base_or_greedy_round_0_evaluates_only_its_sampled_checkpoint(trained, tmp_path):
    import shutil

    from dagster import materialize

    from flywheel_assets.assets.stage8_evaluation import evaluation
    from flywheel_assets.partitions import rounds_partitions
    from flywheel_assets.resources import RoundConfigResource, WarehouseResource

    root, store = trained
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(store.path, copy)
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(rounds_partitions.name, ["r000"])
    result = materialize([evaluation], partition_key="r000", instance=instance, raise_on_error=False, resources={
        "warehouse": WarehouseResource(path=str(copy)), "round_config": RoundConfigResource(max_turns=8),
        "training": TrainingResource(**TINY_TRAINING, checkpoint_dir=str(root / "checkpoints"), evaluate_base=False,
                                     eval_greedy=False)})
    assert result.success
    [first] = store.read_round("policy_checkpoints", "r000")
    rows = Warehouse(copy).read_round("evaluations", "r000")
    assert rows and {(r["subject"], r["checkpoint_id"]) for r in rows} == {("checkpoint", first["checkpoint_id"])}
    assert all(r["greedy_pass_1"] is None and "greedy" not in r["row"] for r in rows)  # eval_greedy off


def test_round_rollouts_and_held_out_trials_sample_at_their_temperatures(trained, tmp_path):
    from flywheel_assets.assets.stage8_evaluation import _evaluate
    from flywheel_assets.store.rows import instances_from_rows, trajectories_from_rows

    _, store = trained
    groups: dict[str, set[str]] = {}
    for t in trajectories_from_rows(r for r in store.read_round("rollouts", "r001") if r["role"] == "policy"):
        groups.setdefault(t.instance_id, set()).add(str(t.messages))
    assert any(len(texts) > 1 for texts in groups.values())  # greedy decoding would make every pair identical
    # The evaluation's trials follow eval_temperature: greedy trials of a task are one episode
    # played twice, sampled ones are not.
    [checkpoint] = store.read_round("policy_checkpoints", "r000")
    heldout = instances_from_rows(store.read_round("eval_tasks", "eval"))

    def trials(temperature: float) -> list[set[str]]:
        training = TrainingResource(checkpoint_dir=str(tmp_path), eval_temperature=temperature, eval_trials=2,
                                    max_new_tokens=24)
        result = _evaluate(training, checkpoint["path"], checkpoint["checkpoint_id"], heldout[:6], 4)
        by_task: dict[str, set[str]] = {}
        for t in result.trajectories:
            by_task.setdefault(t.instance_id, set()).add(str(t.messages))
        return list(by_task.values())

    assert all(len(texts) == 1 for texts in trials(0.0))
    assert any(len(texts) > 1 for texts in trials(1.0))
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        TrainingResource(checkpoint_dir=str(tmp_path)).load_policy(Path(checkpoint["path"]), "bad", temperature=-1.0)


def test_each_round_plays_the_external_benchmark_it_is_asked_to(trained):
    _, store = trained
    for round_key in ("r000", "r001"):
        [checkpoint] = store.read_round("policy_checkpoints", round_key)
        [row] = store.read_round("external_evaluations", round_key)
        assert (row["benchmark"], row["category"], row["metric"], row["entries"], row["checkpoint_id"]) == (
            "bfcl", "base", "accuracy", 1, checkpoint["checkpoint_id"])
        assert 0.0 <= row["value"] <= 1.0 and row["model"] == f"embedded:{checkpoint['checkpoint_id'][:12]}"
    edges = store.records("SELECT relation, parent_id FROM lineage WHERE relation LIKE 'external_evaluation_of:%'")
    assert {e["relation"] for e in edges} == {"external_evaluation_of:bfcl"} and len(edges) == 2


def test_the_limits_benchmark_measures_the_rounds_failures_parents_and_training_coverage(trained):
    from flywheel_training.config import TrainingConfig

    limits = load_benchmark("limits")
    _, store = trained
    scores = [r for r in store.read_round("rubric_scores", "r001") if r["role"] == "policy"]
    played, failed = limits.failed_instances(store, "r001")
    assert played == {r["instance_id"] for r in scores}
    assert failed == {r["instance_id"] for r in scores if not r["success"]}
    [row] = limits.data_and_signal(store, TrainingConfig(**TINY_TRAINING))  # r000 is the SFT cold start
    [checkpoint] = store.read_round("policy_checkpoints", "r001")
    counts = checkpoint["data_counts"]
    parents = {r["parent_id"] for r in store.read_round("hard_samples", "r001")}
    assert (row["round"], row["instances"], row["failed"], row["parents"]) == ("r001", len(played), len(failed),
                                                                               len(parents))
    assert parents and row["parents_failed_share"] == 1.0  # the flywheel augments failures only
    # every failure typed once, as the hard-samples stage typed its parents' variants
    assert sum(row["failed_types"].values()) == len(failed) and sum(row["parent_types"].values()) == len(parents)
    variant_types = {(r["parent_id"], r["instance"]["meta"]["failure_type"])
                     for r in store.read_round("hard_samples", "r001") if r["instance"]}
    assert {kind for _, kind in variant_types} == set(row["parent_types"])
    assert list(row["parent_types"]) == sorted(row["parent_types"])  # limits.json's bytes follow no set order
    assert list(row["failed_types"]) == sorted(row["failed_types"])
    assert len(variant_types) == len({parent for parent, _ in variant_types})
    assert row["prohibited_share"]["parents"] == row["parent_types"].get("prohibited_action", 0) / len(parents)
    domain = {r["instance_id"]: r["domain"] for r in store.read_round("task_instances", "r001")}
    assert row["failed_domains"] == dict(Counter(domain[i] for i in failed))
    assert row["parent_domains"] == dict(Counter(domain[i] for i in parents))
    pool = counts["rows"] * 6  # each row and its 5 renamed-id copies; 2 steps draw 2 conversations each
    assert row["rft_distinct_coverage"] == pytest.approx(1 - (1 - 4 / pool) ** 6)
    assert row["grpo_signal_share"] == pytest.approx(1 - counts["grpo_saturated_groups"] / counts["grpo_groups"])


def test_the_limits_benchmark_pairs_each_seeds_arms_per_group_at_the_last_round(trained, tmp_path):
    import shutil

    limits = load_benchmark("limits")
    _, store = trained
    homes = []
    for name, shift in (("flywheel-seed0", 0.0), ("control-uniform-all-seed0", 0.25),
                        ("flywheel-seed1", 0.0), ("control-uniform-all-seed1", 0.5), ("flywheel-seed2", 0.0)):
        home = tmp_path / name
        (home / ".flywheel").mkdir(parents=True)
        shutil.copy(store.path, home / ".flywheel" / "warehouse.duckdb")
        copy = limits.warehouse(home)
        with copy.connect() as con:  # the control solves one domain's tasks better than the flywheel
            con.execute("UPDATE evaluations SET pass_1 = pass_1 + ? WHERE group_name = 'domain:retail'", [shift])
        homes.append(home)
    last, groups = limits.last_round_groups(limits.warehouse(homes[0]))
    assert last == "r001" and "all" in groups and "domain:retail" in groups
    [(control, row)] = limits.group_differences(homes).items()  # seed 2 has no control: left out
    assert (control, row["round"], row["seeds"]) == ("control-uniform-all", "r001", 2)
    assert row["difference"]["domain:retail"] == pytest.approx(-0.375)
    assert row["difference"]["all"] == 0.0 and set(row["difference"]) == set(groups)


def test_a_limits_look_without_the_capacity_measurement_keeps_the_earlier_rows_still_current(trained, tmp_path):
    import json
    import shutil

    limits = load_benchmark("limits")
    _, store = trained
    [last] = store.read_round("policy_checkpoints", "r001")
    homes = []
    for name in ("flywheel-seed0", "flywheel-seed1", "control-seed0"):
        home = tmp_path / name
        (home / ".flywheel").mkdir(parents=True)
        shutil.copy(store.path, home / ".flywheel" / "warehouse.duckdb")
        homes.append(home)
    assert limits.kept_capacity(tmp_path, homes) == {}  # no earlier limits.json
    current = {"round": "r001", "checkpoint_id": last["checkpoint_id"], "after_pass_1": 0.5}
    earlier = {"flywheel-seed0": current,
               "flywheel-seed1": {**current, "checkpoint_id": "a-checkpoint-the-home-was-rerun-past"},
               "control-seed0": {"round": "r001", "after_pass_1": 0.25},  # written before rows named theirs
               "flywheel-seed9": current}  # a home no longer in the folder
    (tmp_path / "limits.json").write_text(json.dumps({"capacity": earlier}))
    assert limits.kept_capacity(tmp_path, homes) == {"flywheel-seed0": current}
    (tmp_path / "limits.json").write_text("{not json")
    assert limits.kept_capacity(tmp_path, homes) == {}


def test_the_limits_benchmark_reports_no_grpo_signal_for_a_round_whose_grpo_formed_no_groups():
    # grpo_steps 0, or one rollout per instance: the round's data counts name no GRPO groups
    limits = load_benchmark("limits")
    assert limits.grpo_signal({"rows": 31, "hard_sample_solutions": 18}) == {"grpo_groups": 0,
                                                                              "grpo_signal_share": None}
    assert limits.grpo_signal({"grpo_groups": 4, "grpo_saturated_groups": 1}) == {"grpo_groups": 4,
                                                                                   "grpo_signal_share": 0.75}
    assert limits.share(None) == "-" and limits.share(0.754) == "0.75"


def test_the_checkpoint_step_gives_the_uniform_all_control_a_uniform_draw_of_the_teachers_solutions(trained,
                                                                                                    tmp_path):
    """Stage 7 passes the round's control setting on to training. r001 is played again by a
    policy that solves some instances (the tiny model solves none, so there every draw is of
    failures); then the flywheel's teacher solutions all answer failures and the uniform-all
    control's, as many, do not."""
    import shutil

    from dagster import materialize

    from flywheel_assets.assets.stage7_policy_checkpoint import policy_checkpoint
    from flywheel_assets.resources import PolicyResource, RoundConfigResource, WarehouseResource

    root, store = trained
    copy = Warehouse(tmp_path / "warehouse.duckdb")
    shutil.copy(store.path, copy.path)
    round_config = {"tasks_per_domain": 1, "rollouts_per_instance": 2, "max_turns": 8, "eval_per_domain": 1,
                    "backtranslated_per_tree": 1}
    instance = DagsterInstance.ephemeral()
    config = run_config(overrides={"warehouse": {"path": str(copy.path)}, "round_config": round_config,
                                   "policy": {"name": "flaky-teacher", "fail_share": 0.3},
                                   "training": {**TINY_TRAINING, "checkpoint_dir": str(root / "checkpoints")}},
                        log_level="WARNING")
    [outcome] = materialize_rounds(instance, ["r001"], config, copy, report=lambda _: None, train=False)
    assert outcome.success, outcome.error
    solved = [s["success"] for s in copy.read_round("rubric_scores", "r001") if s["role"] == "policy"]
    assert any(solved) and not all(solved)

    def counts(parents: str) -> dict[str, int]:
        resources = {"warehouse": WarehouseResource(path=str(copy.path)), "policy": PolicyResource(),
                     "round_config": RoundConfigResource(**round_config, hard_sample_parents=parents),
                     "training": TrainingResource(**TINY_TRAINING, checkpoint_dir=str(tmp_path / parents))}
        result = materialize([policy_checkpoint], partition_key="r001", instance=instance, raise_on_error=False,
                             resources=resources)
        assert result.success
        [row] = copy.read_round("policy_checkpoints", "r001")
        return row["data_counts"]

    flywheel, control = counts("failures"), counts("uniform-all")
    assert flywheel["teacher_fixes"] > 0 and flywheel["teacher_fixes_of_failures"] == flywheel["teacher_fixes"]
    assert control["teacher_fixes"] == flywheel["teacher_fixes"]
    assert control["teacher_fixes_of_failures"] < control["teacher_fixes"]  # it drew solved instances too
