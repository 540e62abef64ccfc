"""`--world llm` through Dagster: a round whose mock user, mock tools, judge and task writer
are LLMs behind a scripted OpenAI-compatible server on a loopback port. Every role's calls
are logged in `llm_calls` with the round; materialising the same round again answers every
call from the warehouse's call cache (the server sees no request)."""

import pytest
from dagster import DagsterInstance

from flywheel_assets.runner import materialize_rounds, run_config
from flywheel_assets.store import Warehouse
from support.llm_server import ScriptedServer, world_responder


@pytest.fixture(scope="module")
def llm_round(tmp_path_factory):
    server = ScriptedServer(world_responder())
    store = Warehouse(tmp_path_factory.mktemp("llm") / "warehouse.duckdb")
    config = run_config(overrides={
        "warehouse": {"path": str(store.path)}, "policy": {"name": "flaky-teacher", "fail_share": 0.0},
        "round_config": {"domains": "retail", "tasks_per_domain": 2, "rollouts_per_instance": 1,
                         "backtranslated_per_tree": 1},
        "world": {"world": "llm", "llm_roles": "user,tool,judge,writer", "llm_base_url": server.url,
                  "llm_model": "scripted-world"}}, log_level="WARNING")
    instance = DagsterInstance.ephemeral()
    [first] = materialize_rounds(instance, ["r000"], config, store, report=lambda _: None, train=False)
    hits = server.hits
    [again] = materialize_rounds(instance, ["r000"], config, store, report=lambda _: None, train=False)
    yield store, first, again, hits, server
    server.close()


def test_every_llm_role_played_and_was_logged_with_the_round(llm_round):
    store, first, _, hits, _ = llm_round
    assert first.success, first.error
    assert hits > 0
    calls = store.records("SELECT stage, role, count(*) AS n FROM llm_calls WHERE round = 'r000' GROUP BY ALL")
    roles = {(c["stage"], c["role"]) for c in calls}
    assert {("seed_tasks", "writer"), ("rollouts", "user"), ("rollouts", "tool"), ("rubric_scores", "judge")} <= roles
    # the writer's instructions went into the seed instances, and the episodes passed in the LLM world
    written = store.records("SELECT count(*) AS n FROM task_instances WHERE round = 'r000' "
                            "AND json_extract(instance, '$.meta.writer') IS NOT NULL")[0]["n"]
    assert written > 0
    passed = store.records("SELECT avg(success::INT) AS rate FROM rubric_scores WHERE round = 'r000'")[0]["rate"]
    assert passed > 0.5
    figures = {r["metric"]: r["value"] for r in store.records(
        "SELECT metric, value FROM round_metrics WHERE round = 'r000' AND stage = 'rollouts'")}
    assert figures["llm_user_calls"] > 0 and figures["llm_tool_calls"] > 0


def test_the_same_round_again_is_answered_from_the_call_cache(llm_round):
    store, _, again, hits, server = llm_round
    assert again.success, again.error
    assert server.hits == hits  # not one request more
    cached = store.records("SELECT bool_and(cached) AS all_cached, count(*) AS n FROM llm_calls WHERE round = 'r000'")
    assert cached[0]["n"] > 0 and cached[0]["all_cached"]


def test_a_failing_tool_endpoint_fails_the_round_naming_role_and_round_and_writes_no_rollouts(tmp_path):
    server = ScriptedServer(world_responder({"tool": lambda n, body: (503, {"error": {"message": "overloaded"}})}))
    try:
        store = Warehouse(tmp_path / "warehouse.duckdb")
        config = run_config(overrides={
            "warehouse": {"path": str(store.path)}, "policy": {"name": "teacher"},
            "round_config": {"domains": "retail", "tasks_per_domain": 1, "rollouts_per_instance": 1,
                             "backtranslated_per_tree": 0},
            "world": {"world": "llm", "llm_roles": "user,tool", "llm_base_url": server.url, "llm_model": "flaky",
                      "llm_max_retries": 1}}, log_level="CRITICAL")
        [outcome] = materialize_rounds(DagsterInstance.ephemeral(), ["r000"], config, store, report=lambda _: None,
                                       train=False)
    finally:
        server.close()
    assert not outcome.success
    assert "round r000" in outcome.error and "tool endpoint" in outcome.error and "flaky" in outcome.error
    assert store.is_written("task_instances", "r000") and not store.is_written("rollouts", "r000")
    tool_requests = [b for b in server.bodies if "tool" in (b["messages"][0].get("content") or "").lower()]
    assert 0 < len(tool_requests) <= 2 * 1 * 2  # bounded: (1 retry + 1) per call, and the stage stopped


def test_an_llm_teacher_plays_beside_the_policy_and_is_one_of_the_consistency_filters_solvers(tmp_path):
    """With the teacher role on an LLM (here one that never solves anything), the round's
    teacher rollouts are that model's, and the hard-sample consistency filter's solvers are
    that model and the scripted teacher: a variant is kept only when both solve it."""
    from support.llm_server import completion

    server = ScriptedServer(lambda n, body: completion("I am sorry, I cannot help with that."))
    try:
        store = Warehouse(tmp_path / "warehouse.duckdb")
        config = run_config(overrides={
            "warehouse": {"path": str(store.path)}, "policy": {"name": "flaky-teacher", "fail_share": 1.0},
            # one instance: the default share, half of it, still makes it a parent
            "round_config": {"domains": "retail", "tasks_per_domain": 1, "rollouts_per_instance": 1,
                             "backtranslated_per_tree": 0},
            "world": {"world": "llm", "llm_roles": "teacher", "llm_base_url": server.url,
                      "llm_model": "never-solves"}}, log_level="WARNING")
        [outcome] = materialize_rounds(DagsterInstance.ephemeral(), ["r000"], config, store, report=lambda _: None,
                                       train=False)
    finally:
        server.close()
    assert outcome.success, outcome.error
    teachers = store.records("SELECT DISTINCT policy FROM rollouts WHERE round = 'r000' AND role = 'teacher'")
    assert [t["policy"] for t in teachers] == ["teacher:never-solves"]
    hard = store.records("SELECT kept, reason FROM hard_samples WHERE round = 'r000'")
    assert hard and not any(h["kept"] for h in hard)
    assert all("teacher:never-solves failed" in h["reason"] for h in hard)
    stages = {r["stage"] for r in store.records("SELECT DISTINCT stage FROM llm_calls WHERE role = 'teacher'")}
    assert stages == {"rollouts", "hard_samples"}
