"""The DuckDB warehouse: atomic round writes, schema checks, reads and read-only SQL.

DuckDB lets one process write a file, and any open connection from another process (even a
read-only one) blocks it. So every operation here opens a connection, does its work and
closes it; a writer that finds the file locked retries with backoff for a while and then
fails with a message that names the process holding the lock.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from flywheel_assets.round_keys import round_index
from flywheel_assets.store.errors import SchemaMismatch, WarehouseError
from flywheel_assets.store.frames import JsonText, insert, metrics_frame, now, plain, typed_frame  # noqa: F401 (JsonText: re-exported)
from flywheel_assets.store.invalidation import Partition, describe, later_rounds, stale_partitions
from flywheel_assets.store.schema import (
    ASSET_TABLES,
    EVAL_ROUND,
    LLM_CACHE,
    ROUND_METRICS,
    ROUND_PARTITIONS,
    STAGE_TABLES,
    TABLES,
    Table,
    create_table_sql,
    lineage_view_sql,
)

READ_ONLY_CONFIG = {"enable_external_access": False, "lock_configuration": True}
"""Read-only connections (``flywheel sql``, every read) reach no file but the warehouse:
no COPY TO, ATTACH, EXPORT DATABASE, read_csv of other files or extension loading, and
the configuration cannot be changed back."""


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


def _lock_holder(exc: duckdb.Error) -> str:
    match = re.search(r"PID (\d+)", str(exc))
    return f"process {match.group(1)}" if match else "another process"


class Warehouse:
    def __init__(self, path: str | Path, lock_timeout_s: float = 120.0,
                 on_lock_wait: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s
        self.on_lock_wait = on_lock_wait
        """Told once per connection that has to wait for another process's lock, and who holds it."""
        self.lock_wait_s = 0.0
        """Seconds spent waiting for locks by this object, all connections together."""
        self.last_invalidated: list[Partition] = []
        """The partitions the last ``replace_round`` cleared because they were derived from it."""
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
        started = time.monotonic()
        deadline = started + self.lock_timeout_s
        delay = 0.05
        waiting = False
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only,
                                     config=dict(READ_ONLY_CONFIG) if read_only else {})
                break
            except duckdb.Error as exc:
                if not _is_lock_conflict(exc) or time.monotonic() >= deadline:
                    self.lock_wait_s += time.monotonic() - started if waiting else 0.0
                    raise WarehouseError(f"cannot open the warehouse {self.path}: {exc}") from exc
                if not waiting and self.on_lock_wait is not None:
                    self.on_lock_wait(f"waiting up to {self.lock_timeout_s:.0f}s for the warehouse {self.path}: "
                                      f"{_lock_holder(exc)} holds its lock")
                waiting = True
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        if waiting:
            self.lock_wait_s += time.monotonic() - started
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
                      metrics: Mapping[str, float] | None = None, *,
                      extra: Mapping[str, Sequence[Mapping[str, Any]]] | None = None, cascade: bool = False,
                      rebuilding: Collection[str] = ()) -> int:
        """Replace ``round``'s rows of ``table`` (and that stage's metrics for the round) in one
        transaction: a crash leaves either the old rows or the new ones. An empty ``rows`` is
        written as an empty partition. Bad rows are refused before anything is touched.

        ``extra`` maps a per-stage table (``llm_calls``) to this stage's rows of it, replaced in
        the same transaction. When the rows differ from the ones they replace, the same
        transaction clears every partition derived from them (the round's later stages;
        ``last_invalidated`` lists them), so a round is never a mix of two runs; identical rows
        (a rerun with the same configuration) leave what was derived from them in place. When
        later rounds were built from changed rows, the write is refused unless ``cascade`` or
        the caller is ``rebuilding`` those rounds (then their derived partitions are cleared)."""
        spec = _asset_table(table)
        _check_round(spec, round)
        frame = typed_frame(spec, round, rows)
        metric_frame = metrics_frame(round, table, metrics or {})
        extra_frames = {}
        for name, extra_rows in (extra or {}).items():
            if name not in STAGE_TABLES:
                raise WarehouseError(f"unknown per-stage table {name!r}; they are {sorted(STAGE_TABLES)}")
            extra_frames[name] = typed_frame(STAGE_TABLES[name], round, extra_rows, stage=table)
        if not self._schema_checked:
            self.ensure_schema()
        with self.connect() as con:
            con.begin()
            try:
                written = _written(con)
                unchanged = (table, round) in written and _same_rows(con, spec, round, frame)
                stale = [] if unchanged else stale_partitions(written, table, round)
                dependents = [r for r in later_rounds(stale, round) if r not in rebuilding]
                if dependents and not cascade:
                    rerun = (f"`flywheel run --from-round {round_index(round)} --rounds "
                             f"{round_index(dependents[-1]) + 1}`" if round != EVAL_ROUND else "their evaluation")
                    raise WarehouseError(
                        f"refusing to rewrite {table} of round {round}: later rounds {', '.join(dependents)} were "
                        f"built from it ({describe(p for p in stale if p[1] in dependents)}). Rerun them too "
                        f"({rerun}), or pass --cascade to clear them; nothing was written")
                self._clear(con, stale)
                self._write_partition(con, spec, round, frame, metric_frame)
                for name, extra_frame in extra_frames.items():
                    con.execute(f"DELETE FROM {name} WHERE round = ? AND stage = ?", [round, table])
                    insert(con, STAGE_TABLES[name], extra_frame)
                con.commit()
            except BaseException:
                con.rollback()
                raise
        self.last_invalidated = stale
        return frame.height

    def stale_if_rewritten(self, table: str, round: str) -> list[Partition]:
        """The written partitions that rewriting ``table`` of ``round`` would clear."""
        if not self.path.exists():
            return []
        with self.connect(read_only=True) as con:
            return stale_partitions(_written(con) if _has_table(con, ROUND_PARTITIONS.name) else [], table, round)

    def invalidate(self, partitions: Sequence[Partition]) -> None:
        """Clear ``partitions`` (rows, metrics, LLM call log, written marks) in one transaction."""
        if not partitions:
            return
        with self.connect() as con:
            con.begin()
            try:
                self._clear(con, partitions)
                con.commit()
            except BaseException:
                con.rollback()
                raise

    @staticmethod
    def _clear(con: duckdb.DuckDBPyConnection, partitions: Sequence[Partition]) -> None:
        for table, round in partitions:
            con.execute(f"DELETE FROM {_asset_table(table).name} WHERE round = ?", [round])
            con.execute(f"DELETE FROM {ROUND_METRICS.name} WHERE round = ? AND stage = ?", [round, table])
            con.execute(f"DELETE FROM {ROUND_PARTITIONS.name} WHERE table_name = ? AND round = ?", [table, round])
            for name in STAGE_TABLES:
                con.execute(f"DELETE FROM {name} WHERE round = ? AND stage = ?", [round, table])

    def _write_partition(self, con: duckdb.DuckDBPyConnection, spec: Table, round: str,
                         frame: pl.DataFrame, metric_frame: pl.DataFrame) -> None:
        """Everything one round write does; runs inside the caller's transaction."""
        con.execute(f"DELETE FROM {spec.name} WHERE round = ?", [round])
        insert(con, spec, frame)
        con.execute(f"DELETE FROM {ROUND_METRICS.name} WHERE round = ? AND stage = ?", [round, spec.name])
        insert(con, ROUND_METRICS, metric_frame)
        con.execute(f"DELETE FROM {ROUND_PARTITIONS.name} WHERE table_name = ? AND round = ?", [spec.name, round])
        con.execute(f"INSERT INTO {ROUND_PARTITIONS.name} (table_name, round, row_count, written_at) "
                    f"VALUES (?, ?, ?, ?)", [spec.name, round, frame.height, now()])

    # -- the LLM call cache ------------------------------------------------------------

    def llm_cache_get(self, hashes: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The cached calls among ``hashes``: hash -> row (``response`` parsed)."""
        if not hashes or not self.path.exists():
            return {}
        with self.connect(read_only=True) as con:
            if not _has_table(con, LLM_CACHE.name):
                return {}
            cursor = con.execute(f"SELECT {', '.join(LLM_CACHE.column_names)} FROM {LLM_CACHE.name} "
                                 f"WHERE request_hash IN (SELECT unnest(?::VARCHAR[]))", [list(hashes)])
            rows = [dict(zip(LLM_CACHE.column_names, values)) for values in cursor.fetchall()]
        for row in rows:
            row["response"] = json.loads(row["response"]) if row["response"] is not None else None
        return {row["request_hash"]: row for row in rows}

    def llm_cache_put(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert calls into the cache, ignoring hashes already there (also repeats within
        ``rows``: the first wins). Returns how many were inserted."""
        unique: dict[str, Mapping[str, Any]] = {}
        for row in rows:
            unique.setdefault(row.get("request_hash"), row)
        frame = typed_frame(LLM_CACHE, None, list(unique.values()))
        if frame.height == 0:
            return 0
        if not self._schema_checked:
            self.ensure_schema()
        with self.connect() as con:
            before = con.execute(f"SELECT count(*) FROM {LLM_CACHE.name}").fetchall()[0][0]
            insert(con, LLM_CACHE, frame, on_conflict=f"ON CONFLICT ({LLM_CACHE.unique}) DO NOTHING")
            return con.execute(f"SELECT count(*) FROM {LLM_CACHE.name}").fetchall()[0][0] - before

    # -- integrity ---------------------------------------------------------------------

    def check_readable(self) -> None:
        """Open the warehouse, check its schema and read every value of every table, so a
        damaged file is found before a run writes anything into it. A missing file is fine."""
        if not self.path.exists():
            return
        where = "opening it"
        try:  # read everything first (read-only), then check or migrate the schema
            with self.connect(read_only=True) as con:
                tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = "
                                                    "'main' AND NOT internal ORDER BY table_name").fetchall()]
                for name in tables:
                    where = name
                    con.execute(f'SELECT count(*), max(hash(t)) FROM "{name}" AS t').fetchall()
            where = "checking its schema"
            self.ensure_schema()
        except duckdb.Error as exc:
            raise WarehouseError(f"the warehouse {self.path} cannot be read ({where}: {exc}); nothing was "
                                 f"written. Restore it from a copy or use another FLYWHEEL_HOME / --home") from exc

    # -- reads -------------------------------------------------------------------------

    def written_partitions(self) -> list[Partition]:
        """Every (table, round) partition written, in no particular order."""
        if not self.path.exists():
            return []
        with self.connect(read_only=True) as con:
            return _written(con) if _has_table(con, ROUND_PARTITIONS.name) else []

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
        return [{c: plain(v, t) for c, v, t in zip(columns, row, types)} for row in rows]


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


def _same_rows(con: duckdb.DuckDBPyConnection, spec: Table, round: str, frame: pl.DataFrame) -> bool:
    """Whether ``frame`` holds exactly the rows (values and order) that ``round`` of ``spec`` has."""
    columns = ", ".join(f"CAST({c} AS JSON)" if k == "JSON" else c for c, k in spec.columns)
    con.register("flywheel_candidate_rows", frame)
    try:
        have = con.execute(f"SELECT count(*) FROM {spec.name} WHERE round = ?", [round]).fetchall()[0][0]
        if have != frame.height:
            return False
        differing = con.execute(
            f"SELECT count(*) FROM (SELECT {', '.join(spec.column_names)} FROM {spec.name} WHERE round = ? "
            f"EXCEPT ALL SELECT {columns} FROM flywheel_candidate_rows)", [round]).fetchall()[0][0]
        return differing == 0
    finally:
        con.unregister("flywheel_candidate_rows")


def _written(con: duckdb.DuckDBPyConnection) -> list[Partition]:
    return [(t, r) for t, r in con.execute(f"SELECT table_name, round FROM {ROUND_PARTITIONS.name}").fetchall()]


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchone()[0])
