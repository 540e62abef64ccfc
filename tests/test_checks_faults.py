"""Each asset check fed the fault it exists to find (the checks had only ever run on clean
data), and the names users see (tables, columns, the export record, held-out ids) against a
golden file, since ``schema_matches`` compares the schema with itself."""

import json
import os
from pathlib import Path

import duckdb
import pytest

from flywheel_assets.checks import (
    _pass_rate_in_band,
    duplicate_ids,
    expected_pass_rate,
    missing_parents,
    schema_differences,
)
from flywheel_assets.store import Warehouse
from flywheel_assets.store.schema import TABLES

from test_integrity import rollout_row, score_row, write_round
from test_store import instance_row

GOLDEN = Path(__file__).with_name("golden") / "user_facing_names.json"
UPDATE = os.environ.get("FLYWHEEL_UPDATE_GOLDEN") == "1"


@pytest.fixture
def store(tmp_path):
    return Warehouse(tmp_path / "w.duckdb", lock_timeout_s=5)


def test_duplicate_ids_finds_an_id_written_twice(store):
    write_round(store, "r000")
    assert duplicate_ids(store, "task_instances", "r000") == []
    store.replace_round("task_instances", "r001", [instance_row("inst-r000")])  # the same id again
    assert duplicate_ids(store, "task_instances", "r001") == ["inst-r000"]
    assert duplicate_ids(store, "task_instances", "r000") == ["inst-r000"]


def test_missing_parents_finds_a_parent_in_no_table(store):
    write_round(store, "r000")
    assert missing_parents(store, "rollouts", "r000") == []
    store.replace_round("task_instances", "r001", [instance_row("orphan", parent_ids=["gone"], phase="augmented")])
    assert missing_parents(store, "task_instances", "r001") == ["orphan -> gone (parent_ids)"]
    with duckdb.connect(str(store.path)) as con:  # a rollout whose instance vanished
        con.execute("DELETE FROM task_instances WHERE instance_id = 'inst-r000'")
    assert missing_parents(store, "rollouts", "r000") == ["traj-r000 -> inst-r000 (instance_id)"]


@pytest.mark.parametrize("change, expected", [
    ("ALTER TABLE rollouts ADD COLUMN surprise VARCHAR", ["unexpected column surprise VARCHAR"]),
    ("ALTER TABLE rollouts DROP COLUMN turns", ["missing column turns BIGINT"]),
    ("ALTER TABLE rollouts ALTER COLUMN turns TYPE VARCHAR", ["turns is VARCHAR, expected BIGINT"]),
])
def test_schema_differences_finds_each_kind_of_drift(store, change, expected):
    store.replace_round("rollouts", "r000", [])
    assert schema_differences(store, "rollouts") == []
    with duckdb.connect(str(store.path)) as con:
        con.execute("DROP VIEW lineage")
        con.execute(change)
    assert schema_differences(store, "rollouts") == expected


def scores(store, round, policy, successes):
    store.replace_round("task_instances", round, [instance_row(f"i-{round}")])
    store.replace_round("rollouts", round, [rollout_row(f"t{n}", f"i-{round}", 2) for n in range(len(successes))])
    store.replace_round("rubric_scores", round, [score_row(f"t{n}", f"i-{round}", ok) | {"policy": policy}
                                                 for n, ok in enumerate(successes)])


@pytest.mark.parametrize("policy, successes, passed, says", [
    ("embedded:3f2a9c", [False] * 20, False, "outside"),  # a trained checkpoint that learned nothing
    ("embedded:3f2a9c", [True] * 20, False, "outside"),  # saturated
    ("embedded:3f2a9c", [True, False] * 10, True, None),
    ("embedded:base", [False] * 20, True, "untrained base"),  # r000 plays the base: 0 is expected
    ("teacher", [True] * 20, True, "scripted teacher"),
])
def test_the_pass_rate_band_warns_only_when_the_rate_is_unexpected(store, policy, successes, passed, says):
    scores(store, "r000", policy, successes)
    result = _pass_rate_in_band(store, "r000")
    assert result.passed == passed
    assert (says is None and result.description is None) or says in result.description


def names_now(store: Warehouse) -> dict:
    """The user-facing names: warehouse tables with their columns and types, the lineage
    view's columns and the keys of an exported record."""
    from flywheel_assets.store.export import export_records

    write_round(store, "r000")
    [record] = export_records(store, "r000")
    lineage = store.query("SELECT * FROM lineage LIMIT 0").columns
    return {"tables": {name: [f"{c} {k}" for c, k in t.columns] for name, t in TABLES.items()},
            "lineage_view": lineage, "export_record": sorted(record)}


def heldout_ids() -> list[str]:
    from flywheel_assets.assets.eval_tasks import heldout_config
    from flywheel_assets.settings import GROUPS
    from flywheel_assets.store.schema import EVAL_ROUND
    from flywheel_assets.world import pipeline

    config = heldout_config(GROUPS["round_config"].create())
    batch = pipeline.seed_tasks(config, EVAL_ROUND)
    return [i.instance_id for i in pipeline.task_instances(config, EVAL_ROUND, batch,
                                                           pipeline.behavior_trees(batch.tasks))]


def test_user_facing_names_match_the_golden_file(store):
    """A renamed table, column or export key breaks users' SQL and datasets; changing one is a
    decision: regenerate with FLYWHEEL_UPDATE_GOLDEN=1 and say so in the changelog."""
    now = names_now(store)
    if UPDATE:
        golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({**golden, **now}, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    for key in now:
        assert now[key] == golden[key], key


def test_the_default_held_out_instance_ids_match_the_golden_file():
    """Checkpoints of different rounds (and releases) are compared on one held-out set: its ids
    change only on purpose (regenerate with FLYWHEEL_UPDATE_GOLDEN=1)."""
    ids = heldout_ids()
    if UPDATE:
        golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        GOLDEN.write_text(json.dumps({**golden, "heldout_instance_ids": ids}, indent=1, sort_keys=True) + "\n")
    assert ids == json.loads(GOLDEN.read_text())["heldout_instance_ids"]
