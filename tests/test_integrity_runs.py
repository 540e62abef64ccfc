"""Issue 11 reproduced through `flywheel run` (run_rounds) on a real home: a rerun killed
after its rollouts cannot export stale scores, rerunning a round later rounds were built from
is refused or cascades, a killed run does not block later rounds, and the runs carry the code
location's origin (what the job's Runs tab filters on)."""

import signal
import subprocess
import sys
import textwrap

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value
from dagster._core.storage.tags import REPOSITORY_LABEL_TAG

from flywheel_assets.partitions import rounds_partitions

from flywheel_assets.runner import run_rounds
from flywheel_assets.store import Warehouse, WarehouseError
from flywheel_assets.store.export import export_records
from flywheel_assets.store.lineage import dangling_lineage

SMALL = {"round_config": {"tasks_per_domain": 2, "rollouts_per_instance": 2, "eval_per_domain": 1,
                          "domains": "retail,banking"},
         "policy": {"name": "flaky-teacher", "fail_share": 0.5}}
SHORT = {**SMALL, "round_config": {**SMALL["round_config"], "max_turns": 2}}

KILLED_RERUN = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from flywheel_assets.store.warehouse import Warehouse
    from flywheel_assets.runner import run_rounds

    write = Warehouse.replace_round

    def replace_then_hang(self, table, round, *args, **kwargs):
        written = write(self, table, round, *args, **kwargs)
        if (table, round) == ("rollouts", "r001"):
            print("rollouts r001: wrote", flush=True)
            time.sleep(600)  # killed here
        return written

    Warehouse.replace_round = replace_then_hang
    run_rounds(Path(sys.argv[1]), 2, first=1, report=lambda line: None, overrides=OVERRIDES)
""")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))  # run_rounds exports both; restored after
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    return tmp_path


def materialise(home, rounds, first=0, overrides=SMALL, cascade=False):
    lines = []
    outcomes = run_rounds(home, rounds, first=first, report=lines.append, overrides=overrides, cascade=cascade)
    return outcomes, "\n".join(lines)


def store_of(home):
    return Warehouse(home / ".flywheel" / "warehouse.duckdb")


def test_a_rerun_killed_after_rollouts_exports_no_stale_score_and_does_not_block_later_runs(home):
    outcomes, _ = materialise(home, 2)
    assert [o.success for o in outcomes] == [True, True]
    store = store_of(home)
    assert any(r["success"] for r in export_records(store, "r001", successful_only=True))

    script = KILLED_RERUN.replace("OVERRIDES", repr(SHORT))
    rerun = subprocess.Popen([sys.executable, "-c", script, str(home)], stdout=subprocess.PIPE, text=True)
    try:
        assert rerun.stdout.readline().strip() == "rollouts r001: wrote"
        rerun.send_signal(signal.SIGKILL)
        assert rerun.wait(timeout=60) == -signal.SIGKILL
    finally:
        if rerun.poll() is None:
            rerun.kill()
    assert max(r["turns"] for r in store.read_round("rollouts", "r001")) <= 2  # the new, cut rollouts
    with pytest.raises(WarehouseError, match="partition r001 of rubric_scores has not been materialised"):
        export_records(store, "r001", successful_only=True)
    with DagsterInstance.from_config(str(home / ".flywheel" / "dagster")) as instance:
        [killed] = instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED]))
        assert killed.tags["dagster/partition"] == "r001"

    # the next `flywheel run` fails the dead run (freeing the rounds pool) and reruns r001
    outcomes, said = materialise(home, 2, first=1)
    assert [o.success for o in outcomes] == [True]
    assert f"run {killed.run_id} (r001)" in said and "is gone" in said
    with DagsterInstance.from_config(str(home / ".flywheel" / "dagster")) as instance:
        assert instance.get_run_by_id(killed.run_id).status == DagsterRunStatus.FAILURE
        assert not instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.QUEUED]))
    turns = {r["trajectory_id"]: r["turns"] for r in store.read_round("rollouts", "r001")}
    exported = export_records(store, "r001", successful_only=True)
    assert exported and max(turns[r["trajectory_id"]] for r in exported) > 2


def assert_listed_in_the_jobs_runs_tab(home, run_ids):
    """The job's Runs tab asks for runs by job name AND the code location's repository label
    (``.dagster/repository``, see the UI's runsFilter); in-process runs without an origin had no
    label, so the tab, the Jobs list and the timeline showed none of them."""
    from flywheel_assets.run_records import workspace_job_origin

    label = workspace_job_origin("flywheel_data_round").repository_origin.get_label()
    assert label == "__repository__@flywheel"
    with DagsterInstance.from_config(str(home / ".flywheel" / "dagster")) as instance:
        listed = instance.get_runs(RunsFilter(job_name="flywheel_data_round", tags={REPOSITORY_LABEL_TAG: label}))
        assert sorted(r.run_id for r in listed) == sorted(run_ids)
        assert {r.remote_job_origin.repository_origin.code_location_origin.location_name for r in listed} == {"flywheel"}
        held_out = instance.get_runs(RunsFilter(job_name="held_out_eval_tasks", tags={REPOSITORY_LABEL_TAG: label}))
        assert len(held_out) == 1 and held_out[0].status == DagsterRunStatus.SUCCESS


def test_rerunning_a_round_later_rounds_were_built_from_is_refused_or_cascades(home):
    outcomes, _ = materialise(home, 3)
    assert [o.success for o in outcomes] == [True, True, True]
    assert_listed_in_the_jobs_runs_tab(home, [o.run_id for o in outcomes])
    store = store_of(home)
    r002 = store.read_round("task_instances", "r002")
    assert any(r["carried_from"] == "r001" for r in r002)

    # r001's rollouts change (2 turns), and r002 carried r001's hard samples in: refused, named
    outcomes, said = materialise(home, 2, first=1, overrides=SHORT)
    assert [o.success for o in outcomes] == [False]
    assert outcomes[0].error.startswith("rollouts failed: WarehouseError: refusing to rewrite rollouts of round r001: "
                                        "later rounds r002 were built from it (r002 (task_instances, rollouts, "
                                        "rubric_scores, hard_samples))")
    assert "--cascade" in outcomes[0].error
    assert store.read_round("task_instances", "r002") == r002  # nothing of r002 changed
    assert store.is_written("rubric_scores", "r001")  # r001 is still the old, consistent round

    outcomes, said = materialise(home, 2, first=1, overrides=SHORT, cascade=True)
    assert [o.success for o in outcomes] == [True]
    assert not store.is_written("task_instances", "r002") and store.is_written("seed_tasks", "r002")
    assert dangling_lineage(store) == []
    with DagsterInstance.from_config(str(home / ".flywheel" / "dagster")) as instance:
        cleared = instance.get_runs(RunsFilter(tags={"dagster/partition": "r002"}))
        assert cleared[0].status == DagsterRunStatus.FAILURE and "flywheel/cleared" in cleared[0].tags
        # what the UI's partition bars read: r002 of the cleared assets now needs materialising
        for asset, needs in (("task_instances", True), ("hard_samples", True), ("seed_tasks", False)):
            status = get_and_update_asset_status_cache_value(instance, AssetKey(asset), rounds_partitions)
            failed = status.deserialize_failed_partition_subsets(rounds_partitions).get_partition_keys()
            assert ("r002" in set(failed)) == needs, asset


def test_a_flag_overrides_only_what_it_names_and_keeps_the_environments_settings(home, monkeypatch):
    """The README's `FLYWHEEL_POLICY_BASE_URL=… FLYWHEEL_POLICY_MODEL=… flywheel run --policy openai`:
    the flag names the policy; the endpoint still comes from the environment."""
    from flywheel_assets.runner import run_config
    from flywheel_training.serve import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: the round fails at its rollouts
    monkeypatch.setenv("FLYWHEEL_POLICY_BASE_URL", url)
    monkeypatch.setenv("FLYWHEEL_POLICY_MODEL", "served-model")
    monkeypatch.setenv("FLYWHEEL_TASKS_PER_DOMAIN", "1")
    config = run_config(overrides={"policy": {"name": "openai"}, "round_config": {"rollouts_per_instance": 1}})
    policy, rounds = config["resources"]["policy"]["config"], config["resources"]["round_config"]["config"]
    assert policy["name"] == "openai" and policy["base_url"] == {"env": "FLYWHEEL_POLICY_BASE_URL"}
    assert rounds["tasks_per_domain"] == {"env": "FLYWHEEL_TASKS_PER_DOMAIN"} and rounds["rollouts_per_instance"] == 1

    outcomes, _ = materialise(home, 1, overrides={"policy": {"name": "openai", "max_retries": 0, "timeout_s": 1.0},
                                                  "round_config": {"eval_per_domain": 1}})
    [outcome] = outcomes
    assert not outcome.success and "rollouts failed" in outcome.error
    assert url in outcome.error and "served-model" in outcome.error and "needs" not in outcome.error
    # the earlier stages of the round stand, and the message says so
    assert outcome.error.endswith("rollouts wrote nothing; round r000 holds seed_tasks, behavior_trees, "
                                  "task_instances, consistent with each other (writing a stage clears the stages "
                                  "derived from it)")


def test_only_runs_whose_process_is_gone_are_failed_as_orphans():
    from dagster import job, op

    from flywheel_assets.run_records import PID_STARTED_TAG, PID_TAG, fail_orphaned_runs, process_tags

    @op
    def nothing():
        pass

    @job
    def some_job():
        nothing()

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    instance = DagsterInstance.ephemeral()
    alive = instance.create_run_for_job(some_job, tags=process_tags(), status=DagsterRunStatus.STARTED)
    dead = instance.create_run_for_job(some_job, tags={**process_tags(), PID_TAG: str(gone.pid)},
                                       status=DagsterRunStatus.STARTED)
    reused = instance.create_run_for_job(some_job, tags={**process_tags(), PID_STARTED_TAG: "1.000"},
                                         status=DagsterRunStatus.STARTED)  # our pid, another process's start
    other = instance.create_run_for_job(some_job, status=DagsterRunStatus.STARTED)  # not made by `flywheel run`
    said = []
    assert sorted(fail_orphaned_runs(instance, said.append)) == sorted([dead.run_id, reused.run_id])
    status = {r.run_id: r.status for r in instance.get_runs()}
    assert status[alive.run_id] == status[other.run_id] == DagsterRunStatus.STARTED
    assert status[dead.run_id] == status[reused.run_id] == DagsterRunStatus.FAILURE
    assert any(f"pid {gone.pid}" in line for line in said)
