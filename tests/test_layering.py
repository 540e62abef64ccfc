"""The layering rules are import-linter contracts (pyproject.toml), checked here and so by CI:
the engine imports neither Dagster, torch, transformers nor flywheel_training; the warehouse
and flywheel_training import no Dagster; settings load neither Dagster nor torch."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    result = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "4 kept, 0 broken" in result.stdout
