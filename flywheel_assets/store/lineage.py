"""The shipped recursive lineage query (``lineage.sql``), run for one id."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from flywheel_assets.store.schema import lineage_ids_sql
from flywheel_assets.store.warehouse import Warehouse

LINEAGE_SQL_PATH = Path(__file__).with_name("lineage.sql")


def trace_lineage(warehouse: Warehouse, row_id: str) -> pl.DataFrame:
    """Every edge from ``row_id`` up to its seed task(s), nearest first; empty for an id
    that has no parents (a seed task) or is not in the warehouse."""
    return warehouse.query(LINEAGE_SQL_PATH.read_text(), {"id": row_id})


def dangling_lineage(warehouse: Warehouse) -> list[str]:
    """``child (table round) -> parent`` for every lineage edge, in any round, whose parent
    names no row of the warehouse: what a rerun without invalidation would leave behind."""
    frame = warehouse.query(
        f"WITH ids AS ({lineage_ids_sql()}), "
        f"children AS (SELECT id, table_name, round FROM ids) "
        f"SELECT DISTINCT l.child_id, c.table_name, l.round, l.parent_id FROM lineage AS l "
        f"LEFT JOIN children AS c ON c.id = l.child_id AND c.round = l.round "
        f"WHERE NOT EXISTS (SELECT 1 FROM ids WHERE ids.id = l.parent_id) ORDER BY ALL")
    return [f"{child} ({table} {round}) -> {parent}" for child, table, round, parent in frame.iter_rows()]


def rows_with_id(warehouse: Warehouse, row_id: str) -> list[tuple[str, str]]:
    """(table, round) of every row whose own id is ``row_id`` (the held-out set included)."""
    frame = warehouse.query(
        f"SELECT table_name, round FROM ({lineage_ids_sql()} "
        f"UNION ALL SELECT instance_id, 'eval_tasks', round FROM eval_tasks) WHERE id = $id ORDER BY ALL",
        {"id": row_id})
    return [(table, round) for table, round in frame.iter_rows()]


def describe_rootless(warehouse: Warehouse, row_id: str) -> tuple[bool, str]:
    """For an id whose trace is empty: whether it names a row, and a sentence that tells an
    unknown id from a row that starts lineage (a seed task, a held-out instance)."""
    rows = rows_with_id(warehouse, row_id)
    if not rows:
        return False, (f"no row has the id {row_id} in {warehouse.path} (ids are matched exactly; "
                       f"find them with `flywheel sql`)")
    table, round = rows[0]
    what = {"seed_tasks": "a seed task", "eval_tasks": "a held-out instance"}.get(table, f"a row of {table}")
    return True, f"{row_id} is {what} (round {round}): it has no parents, its lineage starts there"
