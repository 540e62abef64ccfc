"""Rows ⇄ typed frames for the warehouse: a table's rows checked and typed before anything
is written (a bad row is refused with a message that names it), inserted by column name, and
values read back as plain Python."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import duckdb
import polars as pl

from flywheel_assets.store.errors import WarehouseError
from flywheel_assets.store.schema import ROUND_METRICS, Table


_POLARS_TYPES = {"VARCHAR": pl.String, "JSON": pl.String, "BIGINT": pl.Int64, "DOUBLE": pl.Float64,
                 "BOOLEAN": pl.Boolean, "TIMESTAMP": pl.Datetime("us")}
_FILLED_BY_STORE = ("round", "position")

class JsonText(str):
    """A value already serialised as JSON: a JSON column stores it as it is (the rows of big
    objects are serialised once, by the caller, instead of being converted twice)."""


def plain(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "JSON":
        return json.loads(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def typed_frame(spec: Table, round: str | None, rows: Sequence[Mapping[str, Any]], stage: str | None = None
           ) -> pl.DataFrame:
    """The rows as a typed frame with exactly the table's columns, or a clear error. The
    store fills ``round``, ``position`` and (for per-stage tables) ``stage``."""
    filled = {"round": round, "stage": stage} if round is not None else {}
    filled = {c: v for c, v in filled.items() if c in spec.types}
    expected = [c for c in spec.column_names if c not in filled and (c != "position" or round is None)]
    data: dict[str, list[Any]] = {c: [] for c in spec.column_names}
    for index, row in enumerate(rows):
        given = set(row) - set(filled)
        if given != set(expected):
            raise WarehouseError(
                f"{spec.name} row {index}: missing columns {sorted(set(expected) - given)}, "
                f"unknown columns {sorted(given - set(expected))}; nothing was written")
        for column, value in filled.items():
            if row.get(column, value) != value:
                raise WarehouseError(f"{spec.name} row {index} says {column} {row[column]!r} but is being "
                                     f"written to {column} {value!r}; nothing was written")
            data[column].append(value)
        for column in expected:
            value = row[column]
            if spec.types[column] == "JSON" and value is not None and not isinstance(value, JsonText):
                value = json.dumps(value, sort_keys=True, ensure_ascii=False)
            data[column].append(value)
        if "position" in spec.types and round is not None:
            data["position"].append(index)
    try:
        return pl.DataFrame(data, schema={c: _POLARS_TYPES[k] for c, k in spec.columns}, strict=True)
    except (TypeError, ValueError, pl.exceptions.PolarsError) as exc:
        raise WarehouseError(f"{spec.name}: a value does not fit its column type ({exc}); nothing was written") from exc


def metrics_frame(round: str, stage: str, metrics: Mapping[str, float]) -> pl.DataFrame:
    values = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise WarehouseError(f"metric {name!r} of {stage} must be a number, got {value!r}")
        values[name] = float(value)
    recorded_at = now()
    return pl.DataFrame({"round": [round] * len(values), "stage": [stage] * len(values), "metric": list(values),
                         "value": list(values.values()), "recorded_at": [recorded_at] * len(values)},
                        schema={c: _POLARS_TYPES[k] for c, k in ROUND_METRICS.columns})


def insert(con: duckdb.DuckDBPyConnection, spec: Table, frame: pl.DataFrame, on_conflict: str = "") -> None:
    """Insert by column name, never by position, so a reordered table cannot swap values."""
    if frame.height == 0:
        return
    columns = ", ".join(spec.column_names)
    select = ", ".join(f"CAST({c} AS JSON)" if k == "JSON" else c for c, k in spec.columns)
    con.register("flywheel_new_rows", frame)
    try:
        con.execute(f"INSERT INTO {spec.name} ({columns}) SELECT {select} FROM flywheel_new_rows {on_conflict}")
    finally:
        con.unregister("flywheel_new_rows")




def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)
