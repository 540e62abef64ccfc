"""The `flywheel` verbs over a real home: `run` (console script, persistent instance),
`sql`, `lineage`, `export`, and the README's lineage queries run through the shell as written."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from flywheel_assets.cli import main

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_", "DAGSTER_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["FLYWHEEL_HOME"] = str(home)
    return env


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    result = subprocess.run(
        [str(BIN / "flywheel"), "run", "--home", str(home), "--rounds", "2", "--tasks-per-domain", "2",
         "--domains", "retail,banking", "--rollouts-per-instance", "2", "--policy", "flaky-teacher"],
        env=clean_env(tmp_path_factory.getbasetemp()), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "round r000: done" in result.stderr and "round r001: done" in result.stderr
    assert "carried in" in result.stderr and "rollouts r001: wrote" in result.stderr  # progress on the terminal
    return home


@pytest.fixture
def in_home(home, monkeypatch):
    """Run main() in-process against the home; restores the environment it changes."""
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / ".flywheel" / "dagster"))
    monkeypatch.delenv("FLYWHEEL_WAREHOUSE", raising=False)
    return home


def test_run_writes_the_persistent_instance_the_ui_reads(home):
    instance_dir = home / ".flywheel" / "dagster"
    assert (instance_dir / "dagster.yaml").read_text() == (ROOT / "dagster.yaml").read_text()
    with DagsterInstance.from_config(str(instance_dir)) as instance:
        assert instance.get_dynamic_partitions("rounds") == ["r000", "r001"]
        assert instance.get_materialized_partitions(AssetKey("hard_samples")) == {"r000", "r001"}
        assert instance.get_latest_materialization_event(AssetKey("eval_tasks")) is not None
        [pool] = [p for p in instance.event_log_storage.get_pool_limits() if p.name == "flywheel_rounds"]
        assert pool.limit == 1
    assert (home / ".flywheel" / "warehouse.duckdb").exists()


def test_sql_prints_a_table_or_one_json_array(in_home, capsys):
    assert main(["sql", "SELECT round, count(*) AS n FROM task_instances GROUP BY round ORDER BY round"]) == 0
    table = capsys.readouterr().out
    assert "round" in table and "r000" in table and "r001" in table
    assert main(["sql", "--json", "SELECT round, row_count, written_at FROM round_partitions "
                 "WHERE table_name = 'seed_tasks' ORDER BY round"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["round"] for r in rows] == ["r000", "r001"] and all(r["row_count"] == 4 for r in rows)
    assert main(["sql", "--json", "SELECT instance FROM task_instances LIMIT 1"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out)[0]["instance"]["expected_path"], list)


def test_sql_is_read_only_and_reports_errors_without_a_traceback(in_home, capsys):
    before = main(["sql", "--json", "SELECT count(*) AS n FROM rollouts"]), capsys.readouterr().out
    assert main(["sql", "DELETE FROM rollouts"]) == 2
    assert "read-only" in capsys.readouterr().err
    assert main(["sql", "SELEC nonsense"]) == 2
    assert "syntax error" in capsys.readouterr().err.lower()
    after = main(["sql", "--json", "SELECT count(*) AS n FROM rollouts"]), capsys.readouterr().out
    assert before == after


def test_lineage_verb_reaches_a_seed_task(in_home, capsys):
    main(["sql", "--json", "SELECT instance_id FROM task_instances WHERE round = 'r001' "
          "AND carried_from IS NOT NULL ORDER BY instance_id LIMIT 1"])
    [row] = json.loads(capsys.readouterr().out)
    assert main(["lineage", "--json", row["instance_id"]]) == 0
    trace = json.loads(capsys.readouterr().out)
    assert trace[0]["relation"] == "carried_over" and trace[0]["parent_round"] == "r000"
    assert trace[-1]["parent_table"] == "seed_tasks"
    assert main(["lineage", "no-such-id"]) == 1
    assert "no row has the id no-such-id" in capsys.readouterr().err


def test_export_writes_openai_messages_jsonl_that_datasets_loads(in_home, tmp_path, capsys):
    out = tmp_path / "r001.jsonl"
    assert main(["export", "--round", "r001", "--format", "jsonl", "--out", str(out)]) == 0
    import datasets

    dataset = datasets.load_dataset("json", data_files=str(out), split="train")
    main(["sql", "--json", "SELECT count(*) AS n FROM rollouts WHERE round = 'r001'"])
    assert len(dataset) == json.loads(capsys.readouterr().out)[0]["n"]
    first = dataset[0]
    assert [m["role"] for m in first["messages"][:2]] == ["system", "user"]
    assert any(m["role"] == "tool" for m in first["messages"]) or first["success"] is False
    assert json.loads(first["tools"][0])["type"] == "function"
    assert set(dataset["role"]) == {"policy", "teacher"}
    assert main(["export", "--round", "r007", "--out", str(tmp_path / "none.jsonl")]) == 2
    assert "partition r007 of rollouts has not been materialised" in capsys.readouterr().err


def test_run_from_round_1_without_round_0_fails_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert main(["run", "--home", str(tmp_path), "--rounds", "2", "--from-round", "1", "--tasks-per-domain", "1",
                 "--domains", "retail"]) == 1
    assert "partition r000 of hard_samples has not been materialised" in capsys.readouterr().err


def test_readme_lineage_queries_run_as_written(home):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Lineage in SQL"):]
    blocks = re.findall(r"```bash\n(.+?)```", section, flags=re.S)
    assert len(blocks) >= 3
    for block in blocks:
        result = subprocess.run(["bash", "-c", block], env=clean_env(home), capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, block + result.stderr
        rows = int(re.search(r"(\d+) rows", result.stderr).group(1))
        assert rows > 0, block
