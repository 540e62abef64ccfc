"""The DuckDB warehouse: atomic round replacement, written-empty partitions, refusals that
lose nothing, schema migration, read-only SQL, lock handling and lineage over the view."""

import signal
import subprocess
import sys
import textwrap

import duckdb
import pytest

from flywheel_assets.store import SchemaMismatch, Warehouse, WarehouseError, trace_lineage


def instance_row(instance_id, *, task_id="task-1", parent_ids=(), carried_from=None, phase="seed"):
    return {"instance_id": instance_id, "task_id": task_id, "domain": "retail", "task_type": "cancel_order",
            "phase": phase, "persona": "neutral", "adversarial": False, "parent_ids": list(parent_ids),
            "carried_from": carried_from, "instruction": f"do {instance_id}",
            "instance": {"instance_id": instance_id, "nested": {"list": [1, 2]}}}


def seed_row(task_id):
    return {"task_id": task_id, "domain": "retail", "task_type": "cancel_order", "goal": "cancel", "seed": "0/r000",
            "required_slots": ["order_id"], "seed_instance_id": f"inst-{task_id}", "task": {"task_id": task_id},
            "seed_instance": {"instance_id": f"inst-{task_id}"}}


def ids(store, table, round):
    return [r["instance_id"] for r in store.read_round(table, round)]


@pytest.fixture
def store(tmp_path):
    return Warehouse(tmp_path / "w.duckdb", lock_timeout_s=5)


def test_replace_round_replaces_only_that_round_and_keeps_write_order(store):
    # (rewriting a round that later rounds were built from is refused: see test_integrity.py)
    store.replace_round("task_instances", "r000", [instance_row("c")])
    store.replace_round("task_instances", "r001", [instance_row("b"), instance_row("a")])
    store.replace_round("task_instances", "r001", [instance_row("z"), instance_row("y"), instance_row("x")])
    assert ids(store, "task_instances", "r001") == ["z", "y", "x"]
    assert ids(store, "task_instances", "r000") == ["c"]
    row = store.read_round("task_instances", "r000")[0]
    assert row["instance"] == {"instance_id": "c", "nested": {"list": [1, 2]}} and row["parent_ids"] == []
    assert store.query("SELECT count(*) AS n FROM task_instances")["n"].item() == 4


def test_empty_result_is_a_written_partition_not_a_missing_one(store):
    store.replace_round("rollouts", "r000", [])
    assert store.is_written("rollouts", "r000")
    assert store.read_round("rollouts", "r000") == []
    assert not store.is_written("rollouts", "r001")
    with pytest.raises(WarehouseError, match="partition r001 of rollouts has not been materialised"):
        store.read_round("rollouts", "r001")
    counts = store.records("SELECT table_name, round, row_count FROM round_partitions")
    assert counts == [{"table_name": "rollouts", "round": "r000", "row_count": 0}]


@pytest.mark.parametrize("bad_rows, message", [
    ([{**instance_row("new"), "surprise": 1}], r"unknown columns \['surprise'\]"),
    ([{k: v for k, v in instance_row("new").items() if k != "phase"}], r"missing columns \['phase'\]"),
    ([{**instance_row("new"), "adversarial": "yes"}], "does not fit its column type"),
    ([{**instance_row("new"), "round": "r005"}], "says round 'r005'"),
])
def test_bad_rows_are_refused_before_anything_is_deleted(store, bad_rows, message):
    store.replace_round("task_instances", "r000", [instance_row("old")])
    with pytest.raises(WarehouseError, match=message):
        store.replace_round("task_instances", "r000", [instance_row("fine"), *bad_rows])
    assert ids(store, "task_instances", "r000") == ["old"]


def test_round_keys_and_table_names_are_validated(store):
    with pytest.raises(WarehouseError, match="not a round key"):
        store.replace_round("task_instances", "round-1", [])
    with pytest.raises(WarehouseError, match="unknown table"):
        store.replace_round("instances", "r000", [])
    with pytest.raises(WarehouseError, match="not partitioned by round"):
        store.replace_round("eval_tasks", "r000", [])


def test_an_error_inside_the_transaction_rolls_back_to_the_previous_rows(tmp_path):
    class FailingAfterInsert(Warehouse):
        def _write_partition(self, con, spec, round, frame, metric_frame):
            super()._write_partition(con, spec, round, frame, metric_frame)
            raise RuntimeError("disk full")

    Warehouse(tmp_path / "w.duckdb").replace_round("task_instances", "r000", [instance_row("old")], {"n": 1})
    with pytest.raises(RuntimeError, match="disk full"):
        FailingAfterInsert(tmp_path / "w.duckdb").replace_round("task_instances", "r000", [instance_row("new")], {"n": 2})
    store = Warehouse(tmp_path / "w.duckdb")
    assert ids(store, "task_instances", "r000") == ["old"]
    assert store.records("SELECT value FROM round_metrics") == [{"value": 1.0}]


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from flywheel_assets.store import Warehouse

    class PausingWarehouse(Warehouse):
        def _write_partition(self, con, spec, round, frame, metric_frame):
            super()._write_partition(con, spec, round, frame, metric_frame)
            print("deleted and inserted, not committed", flush=True)
            time.sleep(600)

    rows = [dict(row, instance_id=f"new-{i}") for i, row in enumerate([ROW] * 50)]
    PausingWarehouse(sys.argv[1]).replace_round("task_instances", "r000", rows, {"instances": 50})
""")


def test_writer_killed_in_the_middle_of_replace_round_leaves_previous_rows(tmp_path):
    path = tmp_path / "w.duckdb"
    Warehouse(path).replace_round("task_instances", "r000", [instance_row("old-1"), instance_row("old-2")],
                                  {"instances": 2})
    script = KILLED_WRITER.replace("ROW", repr(instance_row("template")))
    writer = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "deleted and inserted, not committed"
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=30) == -signal.SIGKILL
    finally:
        if writer.poll() is None:
            writer.kill()
    store = Warehouse(path)
    assert ids(store, "task_instances", "r000") == ["old-1", "old-2"]
    assert store.records("SELECT row_count FROM round_partitions") == [{"row_count": 2}]
    assert store.records("SELECT value FROM round_metrics WHERE metric = 'instances'") == [{"value": 2.0}]
    # and the warehouse still takes writes
    store.replace_round("task_instances", "r000", [instance_row("after")])
    assert ids(store, "task_instances", "r000") == ["after"]


def test_metrics_are_replaced_per_round_and_stage(store):
    store.replace_round("rollouts", "r000", [], {"episodes": 0, "cache_hit_rate": 0.5})
    store.replace_round("task_instances", "r000", [], {"instances": 0})
    store.replace_round("rollouts", "r000", [], {"episodes": 3})
    rows = store.records("SELECT stage, metric, value FROM round_metrics ORDER BY stage, metric")
    assert rows == [{"stage": "rollouts", "metric": "episodes", "value": 3.0},
                    {"stage": "task_instances", "metric": "instances", "value": 0.0}]
    with pytest.raises(WarehouseError, match="must be a number"):
        store.replace_round("rollouts", "r000", [], {"episodes": "three"})


def test_a_column_the_code_gained_is_added_to_an_existing_warehouse(store):
    store.replace_round("task_instances", "r000", [instance_row("a")])
    with duckdb.connect(str(store.path)) as con:
        con.execute("DROP VIEW lineage")
        con.execute("ALTER TABLE task_instances DROP COLUMN carried_from")
    migrated = Warehouse(store.path)
    assert migrated.ensure_schema() == ["ALTER TABLE task_instances ADD COLUMN carried_from VARCHAR"]
    migrated.replace_round("task_instances", "r001", [instance_row("b", carried_from="r000")])
    assert migrated.read_round("task_instances", "r001")[0]["carried_from"] == "r000"
    assert migrated.read_round("task_instances", "r000")[0]["carried_from"] is None


def test_columns_are_inserted_by_name_even_when_the_table_orders_them_differently(store):
    store.ensure_schema()
    with duckdb.connect(str(store.path)) as con:  # same columns, another order
        columns = con.execute("SELECT column_name, data_type FROM duckdb_columns() "
                              "WHERE table_name = 'seed_tasks' ORDER BY column_index DESC").fetchall()
        con.execute("DROP VIEW lineage")
        con.execute("DROP TABLE seed_tasks")
        con.execute(f"CREATE TABLE seed_tasks ({', '.join(f'{c} {t}' for c, t in columns)})")
    Warehouse(store.path).replace_round("seed_tasks", "r000", [seed_row("task-9")])
    row = Warehouse(store.path).read_round("seed_tasks", "r000")[0]
    assert (row["task_id"], row["goal"], row["seed_instance_id"]) == ("task-9", "cancel", "inst-task-9")


@pytest.mark.parametrize("change, message", [
    ("ALTER TABLE rollouts ADD COLUMN extra_column VARCHAR", r"rollouts: columns \['extra_column'\]"),
    ("ALTER TABLE rollouts ALTER COLUMN turns TYPE VARCHAR", "turns is VARCHAR in the warehouse but BIGINT"),
])
def test_a_schema_change_that_cannot_be_migrated_is_refused_and_nothing_changes(store, change, message):
    store.replace_round("rollouts", "r000", [])
    with duckdb.connect(str(store.path)) as con:
        con.execute(change)
    with pytest.raises(SchemaMismatch, match=message):
        Warehouse(store.path).replace_round("rollouts", "r001", [])
    assert not Warehouse(store.path).is_written("rollouts", "r001")


def test_sql_is_read_only_and_needs_an_existing_warehouse(store, tmp_path):
    with pytest.raises(WarehouseError, match="no warehouse at"):
        Warehouse(tmp_path / "missing.duckdb").query("SELECT 1")
    store.replace_round("task_instances", "r000", [instance_row("a")])
    with pytest.raises(duckdb.Error, match="read-only"):
        store.query("DELETE FROM task_instances")
    assert store.records("SELECT instance, adversarial FROM task_instances") == [
        {"instance": {"instance_id": "a", "nested": {"list": [1, 2]}}, "adversarial": False}]


HOLDER = textwrap.dedent("""
    import sys, duckdb
    con = duckdb.connect(sys.argv[1])
    print("holding", flush=True)
    sys.stdin.readline()
    con.close()
    print("released", flush=True)
""")


def test_a_writer_waits_for_a_lock_and_then_fails_with_a_clear_message(tmp_path):
    path = tmp_path / "w.duckdb"
    Warehouse(path).ensure_schema()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(WarehouseError, match=f"cannot open the warehouse {path}.*lock"):
            Warehouse(path, lock_timeout_s=0.3).replace_round("rollouts", "r000", [])
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        Warehouse(path, lock_timeout_s=30).replace_round("rollouts", "r000", [])
    finally:
        holder.kill()
        holder.wait()
    assert Warehouse(path).is_written("rollouts", "r000")


def test_lineage_view_and_recursive_trace_cross_rounds(store):
    store.replace_round("seed_tasks", "r000", [seed_row("task-1")])
    store.replace_round("task_instances", "r000", [instance_row("inst-task-1")])
    store.replace_round("hard_samples", "r000", [{
        "instance_id": "hard-1", "parent_id": "inst-task-1", "operator": "persona_injection", "kept": True,
        "reason": None, "task_id": "task-1", "domain": "retail", "instruction": "x", "instance": {}}])
    store.replace_round("task_instances", "r001", [
        instance_row("carried-1", parent_ids=["hard-1"], carried_from="r000", phase="augmented")])
    trace = trace_lineage(store, "carried-1").to_dicts()
    assert [(r["child_id"], r["relation"], r["parent_id"], r["parent_table"], r["parent_round"]) for r in trace] == [
        ("carried-1", "carried_over", "hard-1", "hard_samples", "r000"),
        ("hard-1", "augmented_from:persona_injection", "inst-task-1", "task_instances", "r000"),
        ("inst-task-1", "instance_of_task", "task-1", "seed_tasks", "r000"),
    ]
    # the view follows the tables: replacing a round replaces its lineage
    store.replace_round("task_instances", "r001", [])
    assert trace_lineage(store, "carried-1").height == 0
    assert store.records("SELECT count(*) AS n FROM lineage") == [{"n": 2}]


def test_rows_serialise_world_objects_exactly_like_to_dict():
    from flywheel_assets.store.rows import json_text
    from flywheel_assets.world.rollout import run_rollouts
    from flywheel_assets.world.rubric import score
    from flywheel_assets.world.synthesis import seed_instances
    from flywheel_assets.world.tasks import canonical_json
    from flywheel_assets.world.teacher import ScriptedTeacher

    batch = seed_instances(["retail", "travel"], 2, seed=3, round_key="r000")
    trajectories = run_rollouts(batch.instances, ScriptedTeacher())
    scores = [score(i, t) for i, t in zip(batch.instances, trajectories)]
    for obj in [*batch.tasks, *batch.instances, *trajectories, *scores]:
        assert json_text(obj) == canonical_json(obj.to_dict())
    with pytest.raises(TypeError, match="not JSON serialisable"):
        json_text({"when": object()})
