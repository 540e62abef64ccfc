"""Bring your own tools, end to end: a real stdio MCP server (tests/support/mcp_tools_server.py)
is imported into a domain file, and `flywheel run --domain-file` runs a round on it with
`--world llm` against a scripted OpenAI-compatible server on a loopback port. The world
writer writes the tasks (records, workflow, a policy condition), they are replayed through
the LLM tool, solved by the teacher, expanded into branches and adversarial users, rolled
out and scored, and `flywheel lineage` traces an instance back to the writer's LLM calls."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from flywheel_assets.cli import main as flywheel
from flywheel_assets.cli_domain import main as domain_cli
from flywheel_assets.store import Warehouse
from support.library_world import library_responder
from support.llm_server import ScriptedServer

SERVER = Path(__file__).resolve().parent / "support" / "mcp_tools_server.py"
BIN = Path(sys.executable).parent
SHRUNK = ["--rounds", "1", "--tasks-per-domain", "3", "--rollouts-per-instance", "1", "--max-turns", "10",
          "--backtranslated-per-tree", "1", "--adversarial-share", "1", "--eval-per-domain", "1",
          "--sft-steps", "4", "--max-new-tokens", "16", "--eval-trials", "1", "--base-induction-steps", "2",
          "--base-recall-steps", "2", "--policy", "flaky-teacher", "--fail-share", "0.5"]


@pytest.fixture(scope="module")
def library_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("library")
    domain_file = work / "library.yaml"
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(SERVER))}"
    assert domain_cli(["domain", "import", "--mcp", command, "--out", str(domain_file)]) == 0
    server = ScriptedServer(library_responder())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_", "DAGSTER_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    home = work / "home"
    try:
        result = subprocess.run(
            [str(BIN / "flywheel"), "run", "--home", str(home), "--domain-file", str(domain_file),
             "--domains", "city_library", *SHRUNK, "--world", "llm", "--llm-base-url", server.url,
             "--llm-model", "scripted-world", "--llm-roles", "user,tool,judge,writer"], env=env, capture_output=True, text=True, timeout=600)
    finally:
        server.close()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return home, Warehouse(home / ".flywheel" / "warehouse.duckdb"), result.stderr


def test_the_round_writes_validated_tasks_and_prints_the_writer_figures(library_run):
    _, store, stderr = library_run
    tasks = store.records("SELECT task_id, domain, task FROM seed_tasks WHERE round = 'r000'")
    assert len(tasks) == 3 and {t["domain"] for t in tasks} == {"city_library"}
    task = tasks[0]["task"]
    assert task["written_by"]["model"] == "scripted-world" and task["written_by"]["request_hashes"]
    # the arguments are traced to where they come from: the user's facts, then the read's output
    borrow = task["workflow"][1]
    assert borrow["tool"] == "borrow_book" and borrow["args"]["member_id"]["kind"] == "slot"
    assert "city_library: writer drafts valid 1.00, teacher solved 1.00" in stderr


def test_the_written_tasks_branch_into_refusals_and_adversarial_users(library_run):
    _, store, _ = library_run
    phases = dict(store.query("SELECT phase, count(*) FROM task_instances WHERE round = 'r000' GROUP BY phase")
                  .iter_rows())
    assert phases["seed"] == 3 and phases["branched"] >= 1 and phases["adversarial"] >= 1
    branched = [r["instance"] for r in store.records(
        "SELECT instance FROM task_instances WHERE round = 'r000' AND phase = 'adversarial'")]
    refusal = next(i for i in branched if "not book_on_shelf" in i["meta"]["path"])
    assert refusal["adversarial"]["claim"] == "The book is definitely on the shelf, I just saw it."
    assert refusal["initial_world"]["books"][refusal["hidden_context"].get("book_id") or
                                             refusal["known_context"]["book_id"]]["available"] is False
    prohibited = [i["check"] for i in refusal["rubric"]["items"] if i["kind"] == "prohibited"]
    assert {"type": "not_called", "tool": "borrow_book", "attempts": True} in prohibited


def test_the_written_instances_are_rolled_out_and_scored(library_run):
    _, store, _ = library_run
    scored = store.records(
        "SELECT s.role, s.success, r.termination FROM rubric_scores s JOIN rollouts r USING (trajectory_id) "
        "JOIN task_instances i ON i.instance_id = r.instance_id AND i.round = r.round "
        "WHERE s.round = 'r000' AND i.domain = 'city_library'")
    teacher = [s for s in scored if s["role"] == "teacher"]
    assert teacher and all(s["success"] for s in teacher)  # the oracle solves every written instance
    assert any(not s["success"] for s in scored if s["role"] == "policy")  # flaky-teacher fails half on purpose
    # the round's failure distribution accounts for every failed policy episode
    failed = store.records("SELECT count(*) AS n FROM rubric_scores WHERE round = 'r000' AND role = 'policy' "
                           "AND NOT success")[0]["n"]
    by_type = store.records("SELECT sum(value) AS n FROM round_metrics WHERE round = 'r000' "
                            "AND stage = 'rubric_scores' AND metric LIKE 'failures.%'")[0]["n"]
    assert failed > 0 and by_type == failed
    calls = dict(store.query("SELECT role, count(*) FROM llm_calls WHERE round = 'r000' GROUP BY role").iter_rows())
    assert calls["writer"] >= 3 and calls["tool"] > 0 and calls["user"] > 0


def test_lineage_reaches_the_llm_calls_that_wrote_an_instance(library_run, monkeypatch, capsys):
    home, store, _ = library_run
    instance_id = store.records("SELECT instance_id FROM task_instances WHERE round = 'r000' "
                                "AND phase = 'adversarial' LIMIT 1")[0]["instance_id"]
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    monkeypatch.delenv("FLYWHEEL_WAREHOUSE", raising=False)
    assert flywheel(["lineage", instance_id, "--json"]) == 0
    edges = json.loads(capsys.readouterr().out)
    last = edges[-1]
    assert last["relation"] == "written_by_llm" and last["parent_table"] == "llm_calls"
    call = store.records("SELECT role, model FROM llm_calls WHERE request_hash = $h AND stage = 'seed_tasks'",
                         {"h": last["parent_id"]})
    assert call == [{"role": "writer", "model": "scripted-world"}]


def test_a_domain_file_without_a_writer_fails_naming_it(tmp_path, capsys):
    domain_file = tmp_path / "library.yaml"
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(SERVER))}"
    assert domain_cli(["domain", "import", "--mcp", command, "--out", str(domain_file)]) == 0
    code = flywheel(["run", "--home", str(tmp_path / "home"), "--domain-file", str(domain_file), "--domains",
                     "city_library", *SHRUNK])
    assert code != 0
    assert "domain file(s) city_library: their tasks are written by an LLM" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_a_round_on_the_imported_server_with_smollm2_as_writer_and_tool(tmp_path):
    """The same import, with SmolLM2-135M-Instruct served locally writing the tasks and
    simulating the tools (the mock user stays procedural: 135M is slow enough as it is on 2
    cores). At 135M most drafts fail validation or replay; the point is that the real path runs
    and every draft is either a kept task that lineage traces to the writer's calls or a
    writer_rejections row saying why."""
    from dagster import DagsterInstance

    from flywheel_assets.runner import materialize_rounds, run_config
    from flywheel_training.serve import serve_in_subprocess

    domain_file = tmp_path / "library.yaml"
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(SERVER))}"
    assert domain_cli(["domain", "import", "--mcp", command, "--out", str(domain_file)]) == 0
    store = Warehouse(tmp_path / "warehouse.duckdb")
    with serve_in_subprocess("smollm2", served_name="smollm2", ready_timeout_s=600) as url:
        config = run_config(overrides={
            "warehouse": {"path": str(store.path)}, "policy": {"name": "teacher"},
            "round_config": {"domains": "city_library", "domain_files": str(domain_file), "tasks_per_domain": 1,
                             "rollouts_per_instance": 1, "backtranslated_per_tree": 1, "max_turns": 4},
            "world": {"world": "llm", "llm_roles": "writer,tool", "llm_base_url": url, "llm_model": "smollm2",
                      "llm_max_tokens": 400, "llm_max_retries": 1, "llm_timeout_s": 600, "llm_concurrency": 2}},
            log_level="WARNING")
        [outcome] = materialize_rounds(DagsterInstance.ephemeral(), ["r000"], config, store, report=print,
                                       train=False)
    assert outcome.success, outcome.error
    writer_calls = store.records("SELECT count(*) AS n FROM llm_calls WHERE stage = 'seed_tasks' AND role = 'writer' "
                                 "AND model = 'smollm2'")[0]["n"]
    kept = store.records("SELECT task_id FROM seed_tasks WHERE domain = 'city_library'")
    rejected = store.records("SELECT kind, reason FROM writer_rejections WHERE domain = 'city_library'")
    print(f"writer calls {writer_calls}, kept {len(kept)}, rejected {rejected}")
    assert writer_calls >= 1
    assert len(kept) + sum(r["kind"] in ("task", "unsolved") for r in rejected) >= 1
    assert all(r["reason"] for r in rejected)
    for task in kept:
        edges = store.query(open(Path(__file__).resolve().parents[1] / "flywheel_assets/store/lineage.sql").read(),
                            {"id": task["task_id"]}).to_dicts()
        assert any(e["parent_table"] == "llm_calls" for e in edges)
