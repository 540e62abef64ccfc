"""A round's scored rollouts as OpenAI-messages JSONL, one episode a line: what
``datasets.load_dataset("json", data_files=...)`` and TRL's SFT trainer read."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
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


class ExportError(WarehouseError):
    """An export that could not be written; the message is one line and the previous file at
    the path (if any) is unchanged."""


def write_jsonl_file(records: list[dict[str, Any]], path: Path) -> None:
    """Write ``records`` to ``path`` through a temporary file in the same folder, renamed over
    ``path`` only once complete: a failure mid-write leaves the previous file as it was."""
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"cannot write {path}: it is a directory; give a file name")
    if not path.parent.is_dir():
        raise ExportError(f"cannot write {path}: the folder {path.parent} does not exist")
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {_reason(exc)}") from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            write_jsonl(records, out)
            out.flush()
            os.fsync(out.fileno())
        if path.exists():  # keep the previous file's permissions
            os.chmod(temporary, path.stat().st_mode & 0o7777)
        else:
            os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        kept = "the previous file is unchanged" if path.exists() else "nothing was written"
        raise ExportError(f"cannot write {path}: {_reason(exc)}; {kept}") from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.EROFS:
        return "the file system is read-only"
    return exc.strerror or str(exc)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
