"""Same seed and settings → the same rows and the same checkpoints, on any load: the same
`flywheel run --rounds 2` (shrunk) in two fresh homes, the second while another process keeps a
core busy, gives identical rows in every data table and identical checkpoint sha256s."""

import json
import os
import subprocess
import sys
from pathlib import Path

from flywheel_assets.store import Warehouse
from flywheel_assets.store.schema import ASSET_TABLES

BIN = Path(sys.executable).parent
SHRUNK = ["--rounds", "2", "--domains", "retail,banking", "--tasks-per-domain", "1", "--rollouts-per-instance", "2",
          "--max-turns", "8", "--backtranslated-per-tree", "1", "--eval-per-domain", "1", "--sft-steps", "6",
          "--grpo-steps", "1", "--rft-steps", "2", "--max-new-tokens", "24", "--eval-trials", "2",
          "--base-induction-steps", "4", "--base-recall-steps", "4"]


def run_in_fresh_home(home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_", "DAGSTER_"))}
    result = subprocess.run([str(BIN / "flywheel"), "run", "--home", str(home), *SHRUNK], env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "plan: r001 trains from round r000's checkpoint: GRPO up to 1 steps" in result.stderr


def table_rows(home: Path) -> dict[str, list[str]]:
    """Every data table's rows in written order, with the home's path (checkpoint folders)
    written as <HOME>: the rows must not differ in anything else."""
    store = Warehouse(home / ".flywheel" / "warehouse.duckdb")
    out = {}
    for table in ASSET_TABLES:
        rows = store.records(f"SELECT * FROM {table} ORDER BY round, position")
        out[table] = [json.dumps(r, sort_keys=True, default=str).replace(str(home), "<HOME>") for r in rows]
    return out


def test_the_same_run_twice_gives_the_same_rows_and_checkpoints_even_on_a_loaded_machine(tmp_path):
    run_in_fresh_home(tmp_path / "quiet")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        run_in_fresh_home(tmp_path / "loaded")
    finally:
        hog.kill()
        hog.wait()
    quiet, loaded = table_rows(tmp_path / "quiet"), table_rows(tmp_path / "loaded")
    assert {t: len(r) for t, r in quiet.items()} == {t: len(r) for t, r in loaded.items()}
    assert all(quiet[t] for t in ("task_instances", "rollouts", "policy_checkpoints", "evaluations"))
    for table in quiet:
        assert quiet[table] == loaded[table], table
    shas = [json.loads(r)["checkpoint_id"] for r in quiet["policy_checkpoints"]]
    assert len(set(shas)) == 2  # r000 and r001 trained different weights, each reproduced exactly
