"""The DuckDB warehouse: atomic round writes, schema checks, reads and read-only SQL.

DuckDB lets one process write a file, and any open connection from another process (even a
read-only one) blocks it. So every operation here opens a connection, does its work and
closes it; a writer that finds the file locked retries with backoff for a while and then
fails with a message that names the process holding the lock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from flywheel_assets.round_keys import round_index
from flywheel_assets.store.schema import (
    ASSET_TABLES,
    EVAL_ROUND,
    ROUND_METRICS,
    ROUND_PARTITIONS,
    TABLES,
    Table,
    create_table_sql,
    lineage_view_sql,
)

_POLARS_TYPES = {"VARCHAR": pl.String, "JSON": pl.String, "BIGINT": pl.Int64, "DOUBLE": pl.Float64,
                 "BOOLEAN": pl.Boolean, "TIMESTAMP": pl.Datetime("us")}
_FILLED_BY_STORE = ("round", "position")


class JsonText(str):
    """A value already serialised as JSON: a JSON column stores it as it is (the rows of big
    objects are serialised once, by the caller, instead of being converted twice)."""


class WarehouseError(RuntimeError):
    """Anything the warehouse refuses to do, with a message that says why and what to do."""


class SchemaMismatch(WarehouseError):
    pass


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


class Warehouse:
    def __init__(self, path: str | Path, lock_timeout_s: float = 120.0):
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s
        self._schema_checked = False

    # -- connections -------------------------------------------------------------------

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection; read-only ones need the file to exist already."""
        if read_only and not self.path.exists():
            raise WarehouseError(f"no warehouse at {self.path}: materialise a round first "
                                 f"(`flywheel run --rounds 1`), or point FLYWHEEL_HOME / --home at one")
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.Error as exc:
                if not _is_lock_conflict(exc) or time.monotonic() >= deadline:
                    raise WarehouseError(f"cannot open the warehouse {self.path}: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        try:
            yield con
        finally:
            con.close()

    # -- schema ------------------------------------------------------------------------

    def ensure_schema(self) -> list[str]:
        """Create missing tables and the lineage view, add columns the code has gained,
        and refuse (before writing anything) a table whose columns differ otherwise.
        Returns the migrations applied."""
        with self.connect() as con:
            applied = self._ensure_schema(con)
        self._schema_checked = True
        return applied

    def _ensure_schema(self, con: duckdb.DuckDBPyConnection) -> list[str]:
        existing: dict[str, dict[str, str]] = {}
        for table_name, column, kind in con.execute(
                "SELECT table_name, column_name, data_type FROM duckdb_columns() "
                "WHERE schema_name = 'main' AND NOT internal").fetchall():
            existing.setdefault(table_name, {})[column] = kind
        plan: list[str] = []
        problems: list[str] = []
        for table in TABLES.values():
            have = existing.get(table.name)
            if have is None:
                plan.append(create_table_sql(table))
                continue
            unknown = [c for c in have if c not in table.types]
            changed = [f"{c} is {have[c]} in the warehouse but {kind} in the code"
                       for c, kind in table.columns if c in have and have[c] != kind]
            if unknown:
                problems.append(f"{table.name}: columns {unknown} are not in this version's schema")
            problems += [f"{table.name}: {text}" for text in changed]
            plan += [f"ALTER TABLE {table.name} ADD COLUMN {c} {kind}" for c, kind in table.columns if c not in have]
        if problems:
            raise SchemaMismatch(
                f"the warehouse {self.path} was written with a different schema and cannot be migrated "
                f"automatically: {'; '.join(problems)}. Nothing was changed. Use a fresh warehouse "
                f"(another FLYWHEEL_HOME / --home) or migrate these columns by hand.")
        con.begin()
        for statement in plan:
            con.execute(statement)
        con.execute(lineage_view_sql())  # always: the view follows the code's parent columns
        con.commit()
        return [s for s in plan if s.startswith("ALTER")]

    # -- writes ------------------------------------------------------------------------

    def replace_round(self, table: str, round: str, rows: Sequence[Mapping[str, Any]],
                      metrics: Mapping[str, float] | None = None) -> int:
        """Replace ``round``'s rows of ``table`` (and that stage's metrics for the round) in one
        transaction: a crash leaves either the old rows or the new ones. An empty ``rows`` is
        written as an empty partition. Bad rows are refused before anything is touched."""
        spec = _asset_table(table)
        _check_round(spec, round)
        frame = _frame(spec, round, rows)
        metric_frame = _metrics_frame(round, table, metrics or {})
        if not self._schema_checked:
            self.ensure_schema()
        with self.connect() as con:
            con.begin()
            try:
                self._write_partition(con, spec, round, frame, metric_frame)
                con.commit()
            except BaseException:
                con.rollback()
                raise
        return frame.height

    def _write_partition(self, con: duckdb.DuckDBPyConnection, spec: Table, round: str,
                         frame: pl.DataFrame, metric_frame: pl.DataFrame) -> None:
        """Everything one round write does; runs inside the caller's transaction."""
        con.execute(f"DELETE FROM {spec.name} WHERE round = ?", [round])
        _insert(con, spec, frame)
        con.execute(f"DELETE FROM {ROUND_METRICS.name} WHERE round = ? AND stage = ?", [round, spec.name])
        _insert(con, ROUND_METRICS, metric_frame)
        con.execute(f"DELETE FROM {ROUND_PARTITIONS.name} WHERE table_name = ? AND round = ?", [spec.name, round])
        con.execute(f"INSERT INTO {ROUND_PARTITIONS.name} (table_name, round, row_count, written_at) "
                    f"VALUES (?, ?, ?, ?)", [spec.name, round, frame.height, _now()])

    # -- reads -------------------------------------------------------------------------

    def is_written(self, table: str, round: str) -> bool:
        """Whether ``round`` of ``table`` was written (possibly empty), as opposed to missing."""
        return round in self.written_rounds(table)

    def written_rounds(self, table: str) -> list[str]:
        _asset_table(table)
        if not self.path.exists():
            return []
        with self.connect(read_only=True) as con:
            if not _has_table(con, ROUND_PARTITIONS.name):
                return []
            return [r[0] for r in con.execute(
                f"SELECT round FROM {ROUND_PARTITIONS.name} WHERE table_name = ? ORDER BY round", [table]).fetchall()]

    def read_round(self, table: str, round: str) -> list[dict[str, Any]]:
        """``round``'s rows of ``table`` in the order they were written, JSON columns parsed.
        Raises when the partition was never written (an empty partition reads as [])."""
        spec = _asset_table(table)
        json_columns = [c for c, kind in spec.columns if kind == "JSON"]
        missing = WarehouseError(f"partition {round} of {table} has not been materialised in {self.path}")
        if not self.path.exists():
            raise missing
        with self.connect(read_only=True) as con:
            written = _has_table(con, ROUND_PARTITIONS.name) and con.execute(
                f"SELECT count(*) FROM {ROUND_PARTITIONS.name} WHERE table_name = ? AND round = ?",
                [table, round]).fetchone()[0]
            if not written:
                raise missing
            cursor = con.execute(f"SELECT {', '.join(spec.column_names)} FROM {spec.name} "
                                 f"WHERE round = ? ORDER BY position", [round])
            rows = [dict(zip(spec.column_names, values)) for values in cursor.fetchall()]
        for row in rows:
            for column in json_columns:
                if row[column] is not None:
                    row[column] = json.loads(row[column])
        return rows

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pl.DataFrame:
        """Run SQL on a read-only connection (writes fail) and return a polars frame."""
        with self.connect(read_only=True) as con:
            relation = con.sql(sql, params=params) if params is not None else con.sql(sql)
            if relation is None:  # a statement with no result set
                return pl.DataFrame()
            return relation.pl()


    def records(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run SQL read-only and return row objects: JSON columns parsed, timestamps as ISO text."""
        with self.connect(read_only=True) as con:
            relation = con.sql(sql, params=params) if params is not None else con.sql(sql)
            if relation is None:
                return []
            columns, types = relation.columns, [str(t) for t in relation.types]
            rows = relation.fetchall()
        return [{c: _plain(v, t) for c, v, t in zip(columns, row, types)} for row in rows]


def _plain(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "JSON":
        return json.loads(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def _asset_table(name: str) -> Table:
    if name not in ASSET_TABLES:
        raise WarehouseError(f"unknown table {name!r}; asset tables are {sorted(ASSET_TABLES)}")
    return ASSET_TABLES[name]


def _check_round(spec: Table, round: str) -> None:
    if spec.name == "eval_tasks":
        if round != EVAL_ROUND:
            raise WarehouseError(f"eval_tasks is not partitioned by round: write it as round {EVAL_ROUND!r}")
        return
    try:
        round_index(round)
    except ValueError as exc:
        raise WarehouseError(f"{spec.name}: {exc}") from exc


def _frame(spec: Table, round: str, rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """The rows as a typed frame with exactly the table's columns, or a clear error."""
    expected = [c for c in spec.column_names if c not in _FILLED_BY_STORE]
    data: dict[str, list[Any]] = {c: [] for c in spec.column_names}
    for index, row in enumerate(rows):
        given = set(row) - {"round"}
        if given != set(expected):
            raise WarehouseError(
                f"{spec.name} row {index}: missing columns {sorted(set(expected) - given)}, "
                f"unknown columns {sorted(given - set(expected))}; nothing was written")
        if row.get("round", round) != round:
            raise WarehouseError(f"{spec.name} row {index} says round {row['round']!r} but is being "
                                 f"written to round {round!r}; nothing was written")
        for column in expected:
            value = row[column]
            if spec.types[column] == "JSON" and value is not None and not isinstance(value, JsonText):
                value = json.dumps(value, sort_keys=True, ensure_ascii=False)
            data[column].append(value)
        data["round"].append(round)
        data["position"].append(index)
    try:
        return pl.DataFrame(data, schema={c: _POLARS_TYPES[k] for c, k in spec.columns}, strict=True)
    except (TypeError, ValueError, pl.exceptions.PolarsError) as exc:
        raise WarehouseError(f"{spec.name}: a value does not fit its column type ({exc}); nothing was written") from exc


def _metrics_frame(round: str, stage: str, metrics: Mapping[str, float]) -> pl.DataFrame:
    values = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise WarehouseError(f"metric {name!r} of {stage} must be a number, got {value!r}")
        values[name] = float(value)
    now = _now()
    return pl.DataFrame({"round": [round] * len(values), "stage": [stage] * len(values), "metric": list(values),
                         "value": list(values.values()), "recorded_at": [now] * len(values)},
                        schema={c: _POLARS_TYPES[k] for c, k in ROUND_METRICS.columns})


def _insert(con: duckdb.DuckDBPyConnection, spec: Table, frame: pl.DataFrame) -> None:
    """Insert by column name, never by position, so a reordered table cannot swap values."""
    if frame.height == 0:
        return
    columns = ", ".join(spec.column_names)
    select = ", ".join(f"CAST({c} AS JSON)" if k == "JSON" else c for c, k in spec.columns)
    con.register("flywheel_new_rows", frame)
    try:
        con.execute(f"INSERT INTO {spec.name} ({columns}) SELECT {select} FROM flywheel_new_rows")
    finally:
        con.unregister("flywheel_new_rows")


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchone()[0])


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)
