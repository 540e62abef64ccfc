"""The DuckDB warehouse: one table per asset, atomic round writes, the lineage view, round
metrics and read-only SQL. See ``schema.py`` for the tables and ``lineage.sql`` for the
recursive trace of any row back to its seed."""

from flywheel_assets.store.warehouse import SchemaMismatch, Warehouse, WarehouseError
from flywheel_assets.store.lineage import LINEAGE_SQL_PATH, trace_lineage

__all__ = ["LINEAGE_SQL_PATH", "SchemaMismatch", "Warehouse", "WarehouseError", "trace_lineage"]
