"""Two flywheel rounds materialised in-process through Dagster into a temporary warehouse
and instance: hard samples carried into the next round, lineage across rounds, idempotent
re-materialisation, the fail-fast on a missing previous round, checks, metadata, the sensor."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, SensorResult, SkipReason, build_sensor_context

from flywheel_assets.definitions import defs, round_job
from flywheel_assets.partitions import previous_round, round_index, round_key
from flywheel_assets.resources import RoundConfigResource
from flywheel_assets.runner import failure_message, materialize_rounds, run_config
from flywheel_assets.sensors import next_round, round_advance_sensor
from flywheel_assets.store import Warehouse, trace_lineage
from flywheel_assets.store.schema import ASSET_TABLES
from flywheel_assets.world import pipeline

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"tasks_per_domain": 2, "rollouts_per_instance": 2}


def small_config(path: Path) -> dict:
    return run_config(overrides={"warehouse": {"path": str(path)}, "policy": {"name": "flaky-teacher", "fail_share": 0.5},
                       "round_config": SMALL}, log_level="WARNING")


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory):
    path = tmp_path_factory.mktemp("flywheel") / "warehouse.duckdb"
    instance = DagsterInstance.ephemeral()
    store = Warehouse(path)
    outcomes = materialize_rounds(instance, ["r000", "r001"], small_config(path), store, report=lambda _: None,
                                  train=False)
    assert [(o.round, o.success, o.error) for o in outcomes] == [("r000", True, ""), ("r001", True, "")]
    return instance, store, outcomes


def table_snapshot(store: Warehouse, round: str) -> dict[str, list]:
    return {name: store.read_round(name, round) for name in ASSET_TABLES
            if name not in ("eval_tasks", "policy_checkpoints", "evaluations", "external_evaluations")}  # no training


def test_round_1_contains_round_0s_kept_hard_samples(two_rounds):
    _, store, _ = two_rounds
    kept = {r["instance_id"] for r in store.read_round("hard_samples", "r000") if r["kept"]}
    assert kept, "the flaky teacher should fail some instances, and some variants should be kept"
    carried = [r for r in store.read_round("task_instances", "r001") if r["carried_from"]]
    assert {r["carried_from"] for r in carried} == {"r000"}
    assert sorted(p for r in carried for p in r["parent_ids"]) == sorted(kept)
    # the carried instances were played and scored in round 1 like the others
    played = {r["instance_id"] for r in store.read_round("rollouts", "r001")}
    assert {r["instance_id"] for r in carried} <= played


def test_lineage_traces_a_round_1_hard_sample_to_its_round_0_seed(two_rounds):
    _, store, _ = two_rounds
    frame = store.query(
        "SELECT h.instance_id FROM hard_samples AS h JOIN task_instances AS t ON t.instance_id = h.parent_id "
        "WHERE h.round = 'r001' AND h.kept AND t.carried_from = 'r000' ORDER BY h.instance_id LIMIT 1")
    assert frame.height == 1, "some round-1 hard sample should come from a carried round-0 hard sample"
    trace = trace_lineage(store, frame.item()).to_dicts()
    assert trace[0]["child_id"] == frame.item() and trace[0]["child_round"] == "r001"
    assert "carried_over" in [r["relation"] for r in trace]
    seeds = [r for r in trace if r["parent_table"] == "seed_tasks"]
    assert seeds and all(r["parent_round"] == "r000" for r in seeds)
    seed_ids = {r["task_id"] for r in store.read_round("seed_tasks", "r000")}
    assert {r["parent_id"] for r in seeds} <= seed_ids


def test_rematerialising_a_round_is_idempotent(two_rounds):
    instance, store, _ = two_rounds
    before = {r: table_snapshot(store, r) for r in ("r000", "r001")}
    lineage_before = store.records("SELECT * FROM lineage ORDER BY ALL")
    # the same configuration gives the same rows: nothing is cleared, and r001 (built from r000) stands
    [outcome] = materialize_rounds(instance, ["r000"], small_config(store.path), store, report=lambda _: None,
                                   train=False)
    assert outcome.success
    assert {r: table_snapshot(store, r) for r in ("r000", "r001")} == before
    lineage_after = store.records("SELECT * FROM lineage ORDER BY ALL")
    assert lineage_after == lineage_before
    assert store.records("SELECT count(*) AS n FROM (SELECT DISTINCT * FROM lineage)") == [{"n": len(lineage_after)}]
    for table in ASSET_TABLES.values():
        dupes = store.query(f"SELECT {table.id_column} FROM {table.name} GROUP BY ALL HAVING count(*) > 1")
        assert dupes.height == 0, table.name


def test_materialising_r001_without_r000_fails_naming_the_missing_partition(tmp_path):
    store = Warehouse(tmp_path / "w.duckdb")
    [outcome] = materialize_rounds(DagsterInstance.ephemeral(), ["r001"], small_config(store.path), store,
                                   report=lambda _: None, train=False)
    assert not outcome.success
    assert "task_instances failed" in outcome.error
    assert "partition r000 of hard_samples has not been materialised" in outcome.error
    assert not store.is_written("task_instances", "r001")


def test_the_dagster_round_equals_the_plain_stage_functions(two_rounds):
    _, store, _ = two_rounds
    config = RoundConfigResource(**SMALL).round_config()
    batch = pipeline.seed_tasks(config, "r000")
    instances = pipeline.task_instances(config, "r000", batch, pipeline.behavior_trees(batch.tasks))
    assert [r["instance_id"] for r in store.read_round("task_instances", "r000")] == \
        [i.instance_id for i in instances]


def test_every_asset_check_passes_and_metadata_carries_the_round_figures(two_rounds):
    instance, _, outcomes = two_rounds
    for outcome in outcomes:
        evaluations = [e for e in instance.get_records_for_run(outcome.run_id).records
                       if e.event_log_entry.dagster_event and
                       e.event_log_entry.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"]
        results = {(e.event_log_entry.dagster_event.asset_check_evaluation_data.asset_key.to_user_string(),
                     e.event_log_entry.dagster_event.asset_check_evaluation_data.check_name):
                   e.event_log_entry.dagster_event.asset_check_evaluation_data.passed for e in evaluations}
        assert len(results) >= 3 * 6 and all(results.values()), results
    [materialization] = instance.fetch_materializations(AssetKey("rubric_scores"), limit=1).records
    metadata = materialization.asset_materialization.metadata
    assert materialization.asset_materialization.partition in ("r000", "r001")
    for name in ("pass_rate", "reward_mean", "reward_var", "saturated_groups", "cache_hit_rate", "duration_s"):
        assert name in metadata, name
    assert 0.0 < metadata["pass_rate"].value < 1.0  # the flaky teacher fails about half on purpose
    assert outcomes[1].figures["task_instances.carried_in"] > 0


def test_round_metrics_table_holds_the_figures_by_round_and_stage(two_rounds):
    _, store, _ = two_rounds
    rows = store.records("SELECT round, value FROM round_metrics WHERE stage = 'rubric_scores' "
                         "AND metric = 'pass_rate' ORDER BY round")
    assert [r["round"] for r in rows] == ["r000", "r001"]
    stages = {r["stage"] for r in store.records("SELECT DISTINCT stage FROM round_metrics WHERE round = 'r001'")}
    assert stages == {"seed_tasks", "behavior_trees", "task_instances", "rollouts", "rubric_scores", "hard_samples"}


def test_definitions_load_with_every_asset_check_job_and_a_stopped_sensor():
    graph = defs.resolve_asset_graph()
    assets = {t.asset_name for t in ASSET_TABLES.values()}
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == assets
    assert {"policy_checkpoint", "evaluation"} <= assets
    checked = {k.asset_key.to_user_string() for k in graph.asset_check_keys}
    assert checked == assets
    job = defs.resolve_job_def(round_job.name)
    assert job.partitions_def is not None and job.partitions_def.name == "rounds"
    sensor = defs.resolve_sensor_def("round_advance_sensor")
    assert sensor.default_status.value == "STOPPED"
    assert {"warehouse", "policy", "round_config", "training"} <= set(defs.resources)
    full = {k.to_user_string() for k in defs.resolve_job_def(round_job.name).asset_layer.executable_asset_keys}
    assert full == assets - {"eval_tasks"}


def test_dg_check_defs_passes():
    result = subprocess.run([str(Path(sys.executable).with_name("dg")), "check", "defs"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout + result.stderr


def test_next_round_rules():
    assert next_round([], set(), 3) == ("r000", "no rounds yet: starting the flywheel")
    assert next_round(["r000"], set(), 3)[0] is None
    assert next_round(["r000", "r001"], {"r000", "r001"}, 3)[0] == "r002"
    key, reason = next_round(["r000", "r001", "r002"], {"r000", "r001", "r002"}, 3)
    assert key is None and "max_rounds=3" in reason


def test_sensor_adds_and_launches_the_next_round_only_after_the_last_stage_completes(two_rounds):
    instance, _, _ = two_rounds
    context = build_sensor_context(instance=instance, resources={"round_config": RoundConfigResource(max_rounds=3)})
    result = round_advance_sensor(context)
    assert isinstance(result, SensorResult)
    [request] = result.run_requests
    assert request.partition_key == "r002" and request.run_key == "round-r002"
    [add] = result.dynamic_partitions_requests
    assert add.partitions_def_name == "rounds" and list(add.partition_keys) == ["r002"]

    capped = build_sensor_context(instance=instance, resources={"round_config": RoundConfigResource(max_rounds=2)})
    assert isinstance(round_advance_sensor(capped), SkipReason)


def test_a_partition_that_is_not_a_round_key_makes_the_sensor_skip_naming_it_not_raise():
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("rounds", ["r000", "my test"])  # as added by hand in the UI
    context = build_sensor_context(instance=instance, resources={"round_config": RoundConfigResource(max_rounds=3)})
    result = round_advance_sensor(context)
    assert isinstance(result, SkipReason)
    assert "['my test']" in result.skip_message and "are not round keys" in result.skip_message


def test_round_keys():
    assert [round_key(i) for i in (0, 7, 123, 1000)] == ["r000", "r007", "r123", "r1000"]
    assert round_index("r042") == 42 and previous_round("r001") == "r000" and previous_round("r000") is None
    with pytest.raises(ValueError, match="not a round key"):
        round_index("2024-01-01")


def test_resources_take_their_settings_from_flywheel_environment_variables(tmp_path, monkeypatch):
    from flywheel_assets.definitions import build_definitions

    settings = {"FLYWHEEL_WAREHOUSE": str(tmp_path / "env.duckdb"), "FLYWHEEL_POLICY": "flaky-teacher",
                "FLYWHEEL_FAIL_SHARE": "0.25", "FLYWHEEL_DOMAINS": "retail,banking",
                "FLYWHEEL_TASKS_PER_DOMAIN": "1", "FLYWHEEL_ROLLOUTS_PER_INSTANCE": "3",
                "FLYWHEEL_EVAL_PER_DOMAIN": "2", "FLYWHEEL_MAX_ROUNDS": "5"}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    env_defs = build_definitions()
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("rounds", ["r000"])
    for job, key in (("held_out_eval_tasks", None), ("flywheel_data_round", "r000")):
        result = env_defs.resolve_job_def(job).execute_in_process(instance=instance, partition_key=key)
        assert result.success
    store = Warehouse(tmp_path / "env.duckdb")
    held_out = store.read_round("eval_tasks", "eval")
    phases = [json.loads(r["instance"])["phase"] if isinstance(r["instance"], str) else r["instance"]["phase"]
              for r in held_out]
    assert phases.count("seed") == 4 and phases.count("branched") == 4 and "adversarial" in phases
    rollouts = store.read_round("rollouts", "r000")
    assert {r["policy"] for r in rollouts} == {"flaky-teacher-0.25", "teacher"}
    instances = store.read_round("task_instances", "r000")
    assert {r["domain"] for r in instances} == {"retail", "banking"}
    assert sum(r["role"] == "policy" for r in rollouts) == 3 * len(instances)

    monkeypatch.setenv("FLYWHEEL_TASKS_PER_DOMAIN", "0")
    result = build_definitions().resolve_job_def("flywheel_data_round").execute_in_process(
        instance=instance, partition_key="r000", raise_on_error=False)
    assert not result.success
    message = failure_message(result)  # the setting's own error, without the module path
    assert message.startswith("seed_tasks failed: SettingsError: ") and "tasks_per_domain" in message
    assert "FLYWHEEL_TASKS_PER_DOMAIN" in message and "got 0" in message
    assert len(store.read_round("task_instances", "r000")) == len(instances)  # the failed run changed nothing


def test_a_failed_policy_endpoint_fails_the_round_naming_endpoint_and_round(tmp_path):
    from flywheel_training.serve import free_port

    store = Warehouse(tmp_path / "w.duckdb")
    config = small_config(store.path)
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    config["resources"]["policy"]["config"] = {"name": "openai", "base_url": url, "model": "served-model",
                                               "max_retries": 1, "timeout_s": 2.0}
    [outcome] = materialize_rounds(DagsterInstance.ephemeral(), ["r000"], config, store, report=lambda _: None,
                                   train=False)
    assert not outcome.success
    assert "rollouts failed" in outcome.error and "round r000" in outcome.error
    assert url in outcome.error and "served-model" in outcome.error
    assert store.is_written("task_instances", "r000") and not store.is_written("rollouts", "r000")


def test_the_openai_policy_says_which_settings_it_lacks():
    from flywheel_assets.resources import PolicyResource

    with pytest.raises(ValueError, match="FLYWHEEL_POLICY_BASE_URL and FLYWHEEL_POLICY_MODEL"):
        PolicyResource(name="openai").policy()
