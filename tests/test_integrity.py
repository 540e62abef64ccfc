"""Data integrity: a round is never a mix of two runs, later rounds never point at rows that
no longer exist, and the read-only SQL connection cannot write or reach outside the warehouse.
Store-level tests here; the Dagster reproductions are in test_integrity_runs.py."""

import duckdb
import pytest

from flywheel_assets.store import Warehouse, WarehouseError
from flywheel_assets.store.invalidation import stale_partitions
from flywheel_assets.store.schema import ROUND_STAGES

from test_store import instance_row, seed_row


def hard_row(instance_id, parent_id):
    return {"instance_id": instance_id, "parent_id": parent_id, "operator": "persona_injection", "kept": True,
            "reason": None, "task_id": "task-1", "domain": "retail", "instruction": "x", "instance": {}}


def rollout_row(trajectory_id, instance_id, turns):
    return {"trajectory_id": trajectory_id, "instance_id": instance_id, "policy": "p", "role": "policy",
            "termination": "done", "turns": turns, "tool_calls": 0, "cache_hits": 0, "tool_errors": 0,
            "trajectory": {"messages": [{"role": "user", "content": "hi"}] * turns}}


def score_row(trajectory_id, instance_id, success):
    return {"score_id": f"s-{trajectory_id}", "trajectory_id": trajectory_id, "instance_id": instance_id,
            "policy": "p", "role": "policy", "reward": float(success), "success": success, "gate": "ok",
            "failed_items": [], "score": {}}


@pytest.fixture
def store(tmp_path):
    return Warehouse(tmp_path / "w.duckdb", lock_timeout_s=5)


def write_round(store, round, *, parent_hard=None, turns=8, success=True):
    store.replace_round("seed_tasks", round, [seed_row(f"task-{round}")])
    store.replace_round("task_instances", round, [
        instance_row(f"inst-{round}", task_id=f"task-{round}"),
        *([instance_row(f"carried-{round}", parent_ids=[parent_hard], carried_from="r000", phase="augmented")]
          if parent_hard else [])])
    store.replace_round("rollouts", round, [rollout_row(f"traj-{round}", f"inst-{round}", turns)])
    store.replace_round("rubric_scores", round, [score_row(f"traj-{round}", f"inst-{round}", success)])
    store.replace_round("hard_samples", round, [hard_row(f"hard-{round}", f"inst-{round}")])


def test_the_stage_graph_is_the_assets_dependency_graph():
    """Invalidation follows STAGE_PARENTS: a stage added or rewired in the assets must be
    declared there too, or rewriting its parents would leave it stale."""
    from flywheel_assets.definitions import defs
    from flywheel_assets.store.schema import ASSET_TABLES, STAGE_PARENTS

    table_of = {t.asset_name: name for name, t in ASSET_TABLES.items()}
    graph = defs.resolve_asset_graph()
    parents = {}
    for key in graph.get_all_asset_keys():
        table = table_of[key.to_user_string()]
        if table in STAGE_PARENTS:
            parents[table] = {table_of[p.to_user_string()] for p in graph.get(key).parent_keys} & set(STAGE_PARENTS)
    assert parents == {table: set(p) for table, p in STAGE_PARENTS.items()}


def test_rewriting_a_stage_clears_the_rounds_later_stages_in_the_same_transaction(store):
    write_round(store, "r000")
    store.replace_round("rollouts", "r000", [rollout_row("traj-r000", "inst-r000", 2)], {"episodes": 1})
    assert store.last_invalidated == [("rubric_scores", "r000"), ("hard_samples", "r000")]
    assert not store.is_written("rubric_scores", "r000") and not store.is_written("hard_samples", "r000")
    assert store.records("SELECT count(*) AS n FROM rubric_scores") == [{"n": 0}]
    assert store.records("SELECT DISTINCT stage FROM round_metrics ORDER BY stage") == [{"stage": "rollouts"}]
    # the stages before it stand
    assert [r["task_id"] for r in store.read_round("seed_tasks", "r000")] == ["task-r000"]


def test_a_rerun_killed_after_rollouts_cannot_export_a_stale_score(store):
    """The reproduction of issue 11: the rerun (2 turns) dies after writing rollouts; the old
    scores (success) must not join the new trajectories."""
    from flywheel_assets.store.export import export_records

    write_round(store, "r000", turns=8, success=True)
    store.replace_round("rollouts", "r000", [rollout_row("traj-r000", "inst-r000", 2)])  # then: kill -9
    with pytest.raises(WarehouseError, match="partition r000 of rubric_scores has not been materialised"):
        export_records(store, "r000", successful_only=True)
    joined = store.records("SELECT count(*) AS n FROM rollouts r JOIN rubric_scores s USING (trajectory_id)")
    assert joined == [{"n": 0}]


def test_rewriting_a_round_later_rounds_were_built_from_is_refused_naming_them(store):
    write_round(store, "r000")
    write_round(store, "r001", parent_hard="hard-r000")
    before = store.records("SELECT * FROM rollouts ORDER BY ALL")
    with pytest.raises(WarehouseError, match=r"later rounds r001 were built from it \(r001 \(task_instances, "
                                             r"rollouts, rubric_scores, hard_samples\)\).*--cascade"):
        store.replace_round("rollouts", "r000", [rollout_row("traj-r000", "inst-r000", 2)])
    assert store.records("SELECT * FROM rollouts ORDER BY ALL") == before  # nothing written
    assert store.is_written("rubric_scores", "r000")
    # the stages of r001 that do not read r000 do not count: seed tasks depend on the seed only
    assert ("seed_tasks", "r001") not in store.stale_if_rewritten("seed_tasks", "r000")


def test_rewriting_identical_rows_keeps_what_was_derived_from_them(store):
    """A rerun with the same configuration (same seed, same rows) changes nothing, so it neither
    clears the round's later stages nor is refused because later rounds exist."""
    write_round(store, "r000")
    write_round(store, "r001", parent_hard="hard-r000")
    before = store.records("SELECT * FROM lineage ORDER BY ALL")
    write_round(store, "r000")
    assert store.last_invalidated == []
    assert store.records("SELECT * FROM lineage ORDER BY ALL") == before
    # the same rows in another order are another write: what came after them is cleared
    store.replace_round("task_instances", "r001", [instance_row("inst-r001", task_id="task-r001"),
                                                   instance_row("carried-r001", parent_ids=["hard-r000"],
                                                                carried_from="r000", phase="augmented")][::-1])
    assert store.last_invalidated == [("rollouts", "r001"), ("rubric_scores", "r001"), ("hard_samples", "r001")]


def test_a_caller_rebuilding_the_later_rounds_may_clear_them(store):
    write_round(store, "r000")
    write_round(store, "r001", parent_hard="hard-r000")
    store.replace_round("rollouts", "r000", [rollout_row("traj-r000", "inst-r000", 2)], rebuilding=["r001"])
    assert ("task_instances", "r001") in store.last_invalidated and not store.is_written("rollouts", "r001")


def test_cascade_clears_what_later_rounds_built_so_no_lineage_dangles(store):
    from flywheel_assets.store.lineage import dangling_lineage

    write_round(store, "r000")
    write_round(store, "r001", parent_hard="hard-r000")
    write_round(store, "r002", parent_hard="hard-r001")
    store.replace_round("hard_samples", "r000", [hard_row("hard-new", "inst-r000")], cascade=True)
    assert store.last_invalidated == [(t, r) for r in ("r001", "r002")
                                      for t in ("task_instances", "rollouts", "rubric_scores", "hard_samples")]
    assert store.is_written("seed_tasks", "r001") and not store.is_written("task_instances", "r001")
    assert dangling_lineage(store) == []


def test_dangling_lineage_finds_rows_whose_parent_was_removed(store):
    from flywheel_assets.store.lineage import dangling_lineage

    write_round(store, "r000")
    write_round(store, "r001", parent_hard="hard-r000")
    with duckdb.connect(str(store.path)) as con:  # what a rerun without invalidation used to leave
        con.execute("DELETE FROM hard_samples WHERE round = 'r000'")
    assert dangling_lineage(store) == ["carried-r001 (task_instances r001) -> hard-r000"]


def test_a_checkpoint_rewrite_makes_the_next_rounds_rollouts_stale_not_its_instances():
    written = {(t, r) for r in ("r000", "r001") for t in ROUND_STAGES}
    stale = stale_partitions(written, "policy_checkpoints", "r000")
    assert stale == [("evaluations", "r000"), ("external_evaluations", "r000")] + [
        (t, "r001") for t in ROUND_STAGES[ROUND_STAGES.index("rollouts"):]]
    assert stale_partitions(written, "evaluations", "r000") == []
    # a stage derived from one parent only is not cleared by rewriting a sibling
    assert stale_partitions(written, "external_evaluations", "r000") == []
    assert stale_partitions(written, "eval_tasks", "eval") == [("evaluations", "r000"), ("evaluations", "r001")]


def test_llm_calls_are_replaced_with_their_stage_and_cleared_with_it(store):
    call = {"call_index": 0, "role": "user", "model": "m", "request_hash": "h1", "cached": False,
            "prompt_tokens": 3, "completion_tokens": 4, "latency_ms": 1.5, "error": None}
    store.replace_round("task_instances", "r000", [instance_row("a")])
    store.replace_round("rollouts", "r000", [], extra={"llm_calls": [call, {**call, "call_index": 1}]})
    store.replace_round("rollouts", "r000", [], extra={"llm_calls": [{**call, "cached": True}]})
    rows = store.records("SELECT round, stage, call_index, cached FROM llm_calls")
    assert rows == [{"round": "r000", "stage": "rollouts", "call_index": 0, "cached": True}]
    store.replace_round("task_instances", "r000", [instance_row("b")])  # rollouts derived from it
    assert store.records("SELECT count(*) AS n FROM llm_calls") == [{"n": 0}]
    with pytest.raises(WarehouseError, match="unknown per-stage table"):
        store.replace_round("rollouts", "r000", [], extra={"llm_log": []})
    with pytest.raises(WarehouseError, match=r"missing columns \['error'\]"):
        store.replace_round("rollouts", "r000", [], extra={"llm_calls": [{k: v for k, v in call.items()
                                                                           if k != "error"}]})


def test_llm_cache_is_content_addressed_and_keeps_the_first_answer(store):
    def entry(h, text):
        return {"request_hash": h, "role": "user", "model": "m", "response": {"content": text},
                "prompt_tokens": 1, "completion_tokens": 2, "latency_ms": 3.0, "first_round": "r000"}

    assert store.llm_cache_get(["h1"]) == {}  # no warehouse yet
    assert store.llm_cache_put([entry("h1", "one"), entry("h2", "two"), entry("h1", "again")]) == 2
    assert store.llm_cache_put([entry("h2", "changed"), entry("h3", "three")]) == 1
    got = store.llm_cache_get(["h1", "h2", "missing"])
    assert sorted(got) == ["h1", "h2"]
    assert got["h1"]["response"] == {"content": "one"} and got["h2"]["response"] == {"content": "two"}
    assert got["h1"]["first_round"] == "r000" and got["h1"]["latency_ms"] == 3.0


@pytest.mark.parametrize("statement, message", [
    ("COPY (SELECT 'x') TO '{warehouse}'", "disabled by configuration"),
    ("COPY (SELECT 'x') TO '{tmp}/out.csv'", "disabled by configuration"),
    ("ATTACH '{tmp}/other.duckdb' AS other (READ_ONLY false)", "disabled by configuration"),
    ("SELECT * FROM read_csv('/etc/passwd')", "disabled by configuration"),
    ("SELECT * FROM '{tmp}/other.duckdb'", "disabled by configuration"),
    ("EXPORT DATABASE '{tmp}/export'", "disabled by configuration"),
    ("SET enable_external_access = true", "configuration has been locked"),
    ("INSTALL httpfs", "disabled by configuration"),
    ("DELETE FROM task_instances", "read-only"),
    ("CREATE TABLE t AS SELECT 1", "read-only"),
])
def test_read_only_sql_cannot_write_or_reach_outside_the_warehouse(store, tmp_path, statement, message):
    store.replace_round("task_instances", "r000", [instance_row("a")])
    with duckdb.connect(str(tmp_path / "other.duckdb")) as con:
        con.execute("CREATE TABLE keep AS SELECT 1 AS x")
    size = store.path.stat().st_size
    sql = statement.format(warehouse=store.path, tmp=tmp_path)
    with pytest.raises(duckdb.Error, match=message):
        store.records(sql)
    assert store.path.stat().st_size == size and ids_of(store) == ["a"]
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "export").exists()
    with duckdb.connect(str(tmp_path / "other.duckdb"), read_only=True) as con:
        assert con.execute("SELECT x FROM keep").fetchall() == [(1,)]


def ids_of(store):
    return [r["instance_id"] for r in store.read_round("task_instances", "r000")]


def test_a_damaged_warehouse_is_found_before_anything_is_written(store):
    import random

    rng = random.Random(0)  # text that does not compress away: the damage must hit table data
    rows = [instance_row(f"i-{n}") | {"instruction": "".join(rng.choice("abcdefghij") for _ in range(500))}
            for n in range(2000)]
    store.replace_round("task_instances", "r000", rows)
    Warehouse(store.path).check_readable()  # the intact file passes
    data = bytearray(store.path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = b"\xff" * 4096
    store.path.write_bytes(bytes(data))
    with pytest.raises(WarehouseError, match="cannot be read.*nothing was written"):
        Warehouse(store.path).check_readable()


def test_a_writer_that_waits_for_the_lock_says_so_and_counts_the_wait(tmp_path):
    import subprocess
    import sys
    import textwrap

    path = tmp_path / "w.duckdb"
    Warehouse(path).ensure_schema()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, duckdb
        con = duckdb.connect(sys.argv[1])
        print("holding", flush=True)
        sys.stdin.readline()
    """), str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    told = []
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(WarehouseError):
            Warehouse(path, lock_timeout_s=0.5, on_lock_wait=told.append).replace_round("rollouts", "r000", [])
    finally:
        holder.kill()
        holder.wait()
    assert len(told) == 1 and f"process {holder.pid} holds its lock" in told[0]


def test_a_changed_held_out_set_clears_every_rounds_evaluation_or_is_refused(store):
    def eval_row(instance_id):
        return {"instance_id": instance_id, "task_id": "t", "domain": "retail", "task_type": "x", "persona": "p",
                "instruction": "i", "instance": {}, "task": {}}

    def evaluation_row(round):
        return {"evaluation_id": f"e-{round}", "checkpoint_id": f"c-{round}", "group_name": "all", "tasks": 1,
                "trials": 1, "pass_1": 0.5, "pass_k": 0.5, "reward_mean": 0.5, "row": {}, "subject": "checkpoint",
                "pass_1_low": 0.0, "pass_1_high": 1.0, "pass_k_low": 0.0, "pass_k_high": 1.0,
                "greedy_pass_1": None, "greedy_pass_1_low": None, "greedy_pass_1_high": None}

    store.replace_round("eval_tasks", "eval", [eval_row("e1")])
    for round in ("r000", "r001"):
        store.replace_round("evaluations", round, [evaluation_row(round)])
    store.replace_round("eval_tasks", "eval", [eval_row("e1")])  # the same set: nothing to clear
    assert store.last_invalidated == []
    with pytest.raises(WarehouseError, match=r"later rounds r000, r001 were built from it.*--cascade"):
        store.replace_round("eval_tasks", "eval", [eval_row("e2")])
    store.replace_round("eval_tasks", "eval", [eval_row("e2")], cascade=True)
    assert store.last_invalidated == [("evaluations", "r000"), ("evaluations", "r001")]
