"""Asset checks on every warehouse table, per round: ids unique, parents exist, the table's
schema matches the code's, and a WARN band on the policy's pass rate.

The checks are plain functions over a ``Warehouse`` (testable without Dagster); the
``@asset_check`` definitions below only wrap them.
"""

import warnings
from collections.abc import Callable

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetChecksDefinition,
    MetadataValue,
    PreviewWarning,
    asset_check,
)

from flywheel_assets.partitions import rounds_partitions
from flywheel_assets.resources import WarehouseResource
from flywheel_assets.store import Warehouse
from flywheel_assets.store.lineage import dangling_lineage
from flywheel_assets.store.schema import ASSET_TABLES, EVAL_ROUND, PARENT_EDGES, lineage_ids_sql

# Checks are partitioned by round like their assets (each run checks its own round). Dagster
# 1.13 calls partitioned checks a preview and warns on every definitions load; we rely on it
# knowingly, and the tests exercise it.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=PreviewWarning)

PASS_RATE_BAND = (0.05, 0.95)
"""Outside it the policy learns little from the round: below, nearly every group scores 0;
above, nearly every group is saturated (all rollouts get the same reward)."""

SAMPLE = 10  # offending ids shown in a failed check's metadata


def duplicate_ids(store: Warehouse, table: str, round: str) -> list[str]:
    """Ids of ``round``'s rows that occur more than once anywhere in ``table``."""
    id_column = ASSET_TABLES[table].id_column
    frame = store.query(
        f"SELECT {id_column} AS id FROM {table} WHERE {id_column} IN "
        f"(SELECT {id_column} FROM {table} WHERE round = $round) GROUP BY {id_column} HAVING count(*) > 1 "
        f"ORDER BY id", {"round": round})
    return frame["id"].to_list() if frame.height else []


def missing_parents(store: Warehouse, table: str, round: str) -> list[str]:
    """``child -> parent (column)`` for ``round``'s rows whose parent is in no table."""
    missing: list[str] = []
    id_column = ASSET_TABLES[table].id_column
    for edge in (e for e in PARENT_EDGES if e.table == table):
        parent = (f"unnest(from_json({edge.column}, '[\"VARCHAR\"]'))" if edge.is_list else edge.column)
        frame = store.query(
            f"WITH ids AS ({lineage_ids_sql()}), edges AS ("
            f"  SELECT {id_column} AS child, {parent} AS parent FROM {table} "
            f"  WHERE round = $round AND {edge.column} IS NOT NULL AND {edge.where_sql}) "
            f"SELECT child, parent FROM edges WHERE NOT EXISTS (SELECT 1 FROM ids WHERE ids.id = edges.parent) "
            f"ORDER BY child, parent",
            {"round": round})
        missing += [f"{child} -> {parent} ({edge.column})" for child, parent in frame.iter_rows()]
    return missing


def schema_differences(store: Warehouse, table: str) -> list[str]:
    """How ``table`` in the warehouse differs from the code's schema ([] when identical)."""
    frame = store.query("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = $table "
                        "AND schema_name = 'main'", {"table": table})
    have = dict(frame.iter_rows()) if frame.height else {}
    want = ASSET_TABLES[table].types
    return ([f"missing column {c} {t}" for c, t in want.items() if c not in have]
            + [f"unexpected column {c} {t}" for c, t in have.items() if c not in want]
            + [f"{c} is {have[c]}, expected {t}" for c, t in want.items() if c in have and have[c] != t])


def policy_pass_rate(store: Warehouse, round: str) -> tuple[float, int]:
    """The share of the policy's (not the teacher's) rollouts that succeeded, and how many."""
    row = store.query("SELECT avg(success::INT) AS rate, count(*) AS n FROM rubric_scores "
                      "WHERE round = $round AND role = 'policy'", {"round": round}).row(0)
    return (float(row[0]) if row[0] is not None else 0.0), int(row[1])


UNTRAINED_BASE = "embedded:base"
"""The policy name round r000 plays: the built base, before any task training."""
ORACLES = ("teacher", "teacher-")
"""Scripted teachers follow the expected path: they pass nearly everything by design."""


def expected_pass_rate(store: Warehouse, round: str) -> str | None:
    """Why the round's pass rate is expected to lie outside the band (None when it is not):
    r000 plays the untrained base, which scores about 0 by design; a scripted teacher as the
    policy scores about 1."""
    frame = store.query("SELECT DISTINCT policy FROM rubric_scores WHERE round = $round AND role = 'policy'",
                        {"round": round})
    policies = set(frame["policy"].to_list()) if frame.height else set()
    if policies and policies == {UNTRAINED_BASE}:
        return f"round {round} plays the untrained base ({UNTRAINED_BASE}): a pass rate near 0 is expected"
    if policies and all(p == "teacher" or p.startswith(ORACLES[1]) for p in policies):
        return f"round {round} is played by the scripted teacher: a pass rate near 1 is expected"
    return None


def _result(problems: list[str], what: str) -> AssetCheckResult:
    return AssetCheckResult(passed=not problems, severity=AssetCheckSeverity.ERROR,
                            description=f"{len(problems)} {what}" if problems else None,
                            metadata={"count": MetadataValue.int(len(problems)),
                                      "sample": MetadataValue.json(problems[:SAMPLE])})


def _round_of(context: AssetCheckExecutionContext) -> str:
    return context.partition_key if context.has_partition_key else EVAL_ROUND


def _make_check(table: str, name: str, description: str,
                evaluate: Callable[[Warehouse, str], AssetCheckResult]) -> AssetChecksDefinition:
    partitioned = table != "eval_tasks"

    @asset_check(asset=ASSET_TABLES[table].asset_name, name=name, description=description,
                 partitions_def=rounds_partitions if partitioned else None)
    def _check(context: AssetCheckExecutionContext, warehouse: WarehouseResource) -> AssetCheckResult:
        return evaluate(warehouse.warehouse(), _round_of(context))

    return _check


def _checks_for(table: str) -> list[AssetChecksDefinition]:
    checks = [
        _make_check(table, "ids_unique", f"every {ASSET_TABLES[table].id_column} of the round occurs once",
                    lambda store, round: _result(duplicate_ids(store, table, round), "duplicated ids")),
        _make_check(table, "schema_matches", "the warehouse table has exactly the code's columns and types",
                    lambda store, round: _result(schema_differences(store, table), "schema differences")),
    ]
    if any(e.table == table for e in PARENT_EDGES):
        checks.append(_make_check(table, "parents_exist", "every parent id names a row in the warehouse",
                                  lambda store, round: _result(missing_parents(store, table, round),
                                                               "rows whose parent is missing")))
    return checks


def _pass_rate_in_band(store: Warehouse, round: str) -> AssetCheckResult:
    rate, episodes = policy_pass_rate(store, round)
    low, high = PASS_RATE_BAND
    in_band = low <= rate <= high
    expected = None if in_band else expected_pass_rate(store, round)
    return AssetCheckResult(
        passed=in_band or expected is not None, severity=AssetCheckSeverity.WARN,
        description=expected if expected else None if in_band else
        f"policy pass rate {rate:.3f} is outside [{low}, {high}]: the round gives little learning signal",
        metadata={"pass_rate": MetadataValue.float(rate), "episodes": MetadataValue.int(episodes)})


ASSET_CHECKS: list[AssetChecksDefinition] = [check for table in ASSET_TABLES for check in _checks_for(table)]
ASSET_CHECKS.append(_make_check("task_instances", "no_dangling_lineage",
                                "no lineage edge, in any round, points at a row that no longer exists (a rerun "
                                "of an earlier round clears or refuses what was built from it)",
                                lambda store, round: _result(dangling_lineage(store), "edges to missing rows")))
ASSET_CHECKS.append(_make_check("rubric_scores", "pass_rate_in_band",
                                f"the policy's pass rate lies in {list(PASS_RATE_BAND)} (WARN otherwise)",
                                _pass_rate_in_band))
