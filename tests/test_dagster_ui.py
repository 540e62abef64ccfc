"""`flywheel ui` on a free loopback port: the webserver's GraphQL endpoint lists the
flywheel's assets and the materialised round partitions, backfills of whole rounds run in
round order through the daemon, and the UI stops when signalled by pid."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from flywheel_assets.store.schema import ASSET_TABLES

BIN = Path(sys.executable).parent
ASSETS_QUERY = """{ assetNodes { assetKey { path } partitionKeys
  assetPartitionStatuses { ... on DefaultPartitionStatuses { materializedPartitions } } } }"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


JOB_RUNS_QUERY = """{ repositoryOrError(repositorySelector: {repositoryName: "__repository__",
  repositoryLocationName: "flywheel"}) { ... on Repository { jobs { name
  runs { status tags { key value } } } } } }"""

ROUND_ASSETS = ["seed_tasks", "behavior_trees", "task_instances", "rollouts", "rubric_scores", "hard_samples"]


def backfill(port: int, assets: list[str], partitions: list[str]) -> str:
    selection = ", ".join(f'{{path: ["{a}"]}}' for a in assets)
    data = graphql(port, f"""mutation {{ launchPartitionBackfill(backfillParams: {{
        partitionNames: {json.dumps(partitions)}, assetSelection: [{selection}]}}) {{
        __typename ... on LaunchBackfillSuccess {{ backfillId }} ... on PythonError {{ message }} }} }}""")
    result = data["data"]["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    return result["backfillId"]


def backfill_runs(port: int, backfill_id: str, count: int, timeout_s: float = 300) -> dict[str, dict]:
    """The backfill's runs by partition, once ``count`` of them have finished."""
    query = f"""{{ runsOrError(filter: {{tags: [{{key: "dagster/backfill", value: "{backfill_id}"}}]}}) {{
        ... on Runs {{ results {{ status startTime endTime tags {{ key value }} }} }} }} }}"""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = graphql(port, query)["data"]["runsOrError"]["results"]
        if len(runs) == count and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in runs):
            return {next(t["value"] for t in r["tags"] if t["key"] == "dagster/partition"): r for r in runs}
        time.sleep(2)
    raise TimeoutError(f"backfill {backfill_id} did not finish within {timeout_s}s")


def wait_for_assets(port: int, ui: subprocess.Popen, timeout_s: float = 180) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert ui.poll() is None, "flywheel ui exited early"
        try:
            data = graphql(port, ASSETS_QUERY)
            if data.get("data", {}).get("assetNodes"):
                return data
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    raise TimeoutError(f"no assets from the UI on port {port} within {timeout_s}s")


@pytest.mark.slow
def test_ui_serves_assets_and_partitions_runs_backfills_and_stops_by_pid(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_", "DAGSTER_"))}
    run = subprocess.run([str(BIN / "flywheel"), "run", "--home", str(tmp_path), "--rounds", "2",
                          "--tasks-per-domain", "1", "--domains", "retail,banking", "--policy", "flaky-teacher"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    port = free_port()
    log = (tmp_path / "ui.log").open("w")
    small = {"FLYWHEEL_TASKS_PER_DOMAIN": "1", "FLYWHEEL_DOMAINS": "retail,banking", "FLYWHEEL_POLICY": "flaky-teacher"}
    ui = subprocess.Popen([str(BIN / "flywheel"), "ui", "--home", str(tmp_path), "--port", str(port)],
                          env={**env, **small}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        data = wait_for_assets(port, ui)
        nodes = {"/".join(n["assetKey"]["path"]): n for n in data["data"]["assetNodes"]}
        assert set(nodes) == {t.asset_name for t in ASSET_TABLES.values()}
        # the rounds `flywheel run` made are the job's own runs (its Runs tab, the Jobs list bars),
        # which the UI finds by the code location's repository label, not by job name alone
        job_runs = graphql(port, JOB_RUNS_QUERY)["data"]["repositoryOrError"]["jobs"]
        runs = {j["name"]: j["runs"] for j in job_runs}
        partitions = [next(t["value"] for t in r["tags"] if t["key"] == "dagster/partition")
                      for r in runs["flywheel_data_round"]]
        assert sorted(partitions) == ["r000", "r001"]
        assert [r["status"] for r in runs["held_out_eval_tasks"]] == ["SUCCESS"]
        for name in ("seed_tasks", "hard_samples"):
            assert nodes[name]["partitionKeys"] == ["r000", "r001"]
            assert sorted(nodes[name]["assetPartitionStatuses"]["materializedPartitions"]) == ["r000", "r001"]

        # whole rounds run one after another, in round order (the flywheel_rounds pool, size 1)
        rounds = backfill_runs(port, backfill(port, ROUND_ASSETS, ["r000", "r001"]), 2)
        assert [rounds[k]["status"] for k in ("r000", "r001")] == ["SUCCESS", "SUCCESS"]
        assert rounds["r001"]["startTime"] >= rounds["r000"]["endTime"]
        # one stage over past rounds is not held back by the pool
        stage = backfill_runs(port, backfill(port, ["rubric_scores"], ["r000", "r001"]), 2)
        assert [stage[k]["status"] for k in ("r000", "r001")] == ["SUCCESS", "SUCCESS"]

        ui.send_signal(signal.SIGINT)  # by pid: `flywheel ui` exec'd into `dagster dev`
        assert ui.wait(timeout=60) is not None
    finally:
        if ui.poll() is None:  # the group is this test's own session: webserver, daemon, code server
            os.killpg(ui.pid, signal.SIGKILL)
            ui.wait()
        log.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
