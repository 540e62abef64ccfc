"""The read verbs over hostile or broken conditions: model text with terminal escapes, NaN
in --json, unknown ids, exports to paths that cannot take them, a closed pipe, and a home
whose FLYWHEEL_* variables meet the flags (test_cli_flywheel.py clears them all)."""

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest

from flywheel_assets.cli import build_parser, main
from flywheel_assets.store import Warehouse

from test_integrity import write_round
from test_store import instance_row

HOSTILE = "red\x1b[31m alert\x00 cut\u202eevil\x07bell"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    monkeypatch.delenv("FLYWHEEL_WAREHOUSE", raising=False)
    store = Warehouse(tmp_path / ".flywheel" / "warehouse.duckdb")
    write_round(store, "r000")
    store.replace_round("task_instances", "r001", [instance_row("hostile") | {"instruction": HOSTILE}])
    return tmp_path


def test_sql_table_view_shows_control_characters_as_escapes(home, capsys):
    assert main(["sql", "--home", str(home), "SELECT instruction FROM task_instances WHERE round = 'r001'"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x00" not in out and "\u202e" not in out and "\x07" not in out
    assert r"red\x1b[31m alert\x00 cut\u202eevil\x07bell" in out


def test_sql_json_is_strict_json_and_keeps_text_exact(home, capsys):
    query = ("SELECT 'nan'::DOUBLE AS nan, 'inf'::DOUBLE AS inf, 1.5 AS x, instruction FROM task_instances "
             "WHERE round = 'r001'")
    assert main(["sql", "--home", str(home), "--json", query]) == 0

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    [row] = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert row == {"nan": None, "inf": None, "x": 1.5, "instruction": HOSTILE}


@pytest.mark.parametrize("statement", ["COPY (SELECT 'x') TO '{warehouse}'", "SELECT * FROM read_csv('/etc/passwd')",
                                       "ATTACH '{home}/other.duckdb' AS o", "EXPORT DATABASE '{home}/out'"])
def test_sql_cannot_write_files_or_read_outside_the_warehouse(home, capsys, statement):
    warehouse = home / ".flywheel" / "warehouse.duckdb"
    size = warehouse.stat().st_size
    assert main(["sql", "--home", str(home), statement.format(warehouse=warehouse, home=home)]) == 2
    assert "disabled by configuration" in capsys.readouterr().err
    assert warehouse.stat().st_size == size and not (home / "out").exists()


def test_lineage_tells_an_unknown_id_from_a_seed_task(home, capsys):
    assert main(["lineage", "--home", str(home), "no-such-id"]) == 1
    assert "no row has the id no-such-id" in capsys.readouterr().err
    assert main(["lineage", "--home", str(home), "task-r000"]) == 0
    assert "task-r000 is a seed task (round r000): it has no parents" in capsys.readouterr().err


def test_export_replaces_the_file_only_when_complete(home, capsys, monkeypatch):
    out = home / "r000.jsonl"
    assert main(["export", "--home", str(home), "--round", "r000", "--out", str(out)]) == 0
    good = out.read_text()
    assert json.loads(good.splitlines()[0])["round"] == "r000"

    import flywheel_assets.store.export as export

    def disk_fills(records, stream):
        stream.write("{\"partial\": ")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "write_jsonl", disk_fills)
    capsys.readouterr()
    assert main(["export", "--home", str(home), "--round", "r000", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"flywheel export: cannot write {out}: the disk is full; the previous file is unchanged"
    assert out.read_text() == good and [p.name for p in home.iterdir() if p.name.startswith(".r000")] == []


@pytest.mark.parametrize("target, message", [
    (".", "it is a directory"),
    ("missing-folder/r000.jsonl", "does not exist"),
])
def test_export_to_a_path_that_cannot_take_it_is_one_clear_line(home, capsys, target, message):
    assert main(["export", "--home", str(home), "--round", "r000", "--out", str(home / target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flywheel export: cannot write") and message in err and "\n" not in err


def test_export_to_a_closed_pipe_says_so_without_a_traceback(home):
    export = subprocess.Popen([sys.executable, "-m", "flywheel_assets.cli", "export", "--home", str(home),
                               "--round", "r000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    export.stdout.close()  # the reader went away (`| head` that has seen enough)
    err = export.stderr.read()
    assert export.wait(timeout=120) == 1
    assert err.strip() == "flywheel export: the output was closed before the export finished", err


def test_run_has_a_cascade_flag():
    assert build_parser().parse_args(["run", "--rounds", "2", "--cascade"]).cascade is True
    assert build_parser().parse_args(["run", "--rounds", "2"]).cascade is False
