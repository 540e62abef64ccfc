"""A round's scored rollouts as OpenAI-messages JSONL, one episode a line: what
``datasets.load_dataset("json", data_files=...)`` and TRL's SFT trainer read."""

from __future__ import annotations

import json
from typing import Any, TextIO

from flywheel_assets.store.warehouse import Warehouse, WarehouseError
from flywheel_assets.world.domains import get_domain

EXPORT_SQL = """
SELECT r.trajectory_id, r.instance_id, r.policy, r.role, i.domain, i.task_type, s.reward, s.success,
       r.trajectory -> '$.messages' AS messages
FROM rollouts AS r
JOIN rubric_scores AS s ON s.trajectory_id = r.trajectory_id AND s.round = r.round
JOIN task_instances AS i ON i.instance_id = r.instance_id AND i.round = r.round
WHERE r.round = $round AND (NOT $successful_only OR s.success)
ORDER BY r.position
"""


def export_records(store: Warehouse, round: str, *, successful_only: bool = False) -> list[dict[str, Any]]:
    """One record per scored rollout of ``round``: ``messages`` and ``tools`` in the OpenAI
    format, plus ids, reward and success. Tool schemas are JSON text: Arrow would otherwise
    merge the parameter schemas of different tools into one struct full of nulls."""
    for table in ("rollouts", "rubric_scores", "task_instances"):
        if not store.is_written(table, round):
            raise WarehouseError(f"cannot export round {round}: partition {round} of {table} has not been materialised")
    rows = store.records(EXPORT_SQL, {"round": round, "successful_only": successful_only})
    tools = {}
    for row in rows:
        if row["domain"] not in tools:
            tools[row["domain"]] = [json.dumps(spec.openai_schema(), sort_keys=True)
                                    for spec in get_domain(row["domain"]).tool_specs]
        row["tools"] = tools[row["domain"]]
        row["round"] = round
    return rows


def write_jsonl(records: list[dict[str, Any]], out: TextIO) -> None:
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
