"""The shipped recursive lineage query (``lineage.sql``), run for one id."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from flywheel_assets.store.warehouse import Warehouse

LINEAGE_SQL_PATH = Path(__file__).with_name("lineage.sql")


def trace_lineage(warehouse: Warehouse, row_id: str) -> pl.DataFrame:
    """Every edge from ``row_id`` up to its seed task(s), nearest first; empty for an id
    that has no parents (a seed task) or is not in the warehouse."""
    return warehouse.query(LINEAGE_SQL_PATH.read_text(), {"id": row_id})
