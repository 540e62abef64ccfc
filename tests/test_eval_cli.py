"""`flywheel eval`: the verb plays an OpenAI-compatible endpoint on BFCL (a scripted server
on a loopback port playing the gold calls), refuses a scripted policy, and `--gold` replays
the ground truth through the harness beside BFCL's own replay."""

import json

from flywheel_assets.cli import main
from flywheel_training.evals import bfcl
from support.scripted_openai import ScriptedOpenAI
from test_bfcl import gold_server_answer


def test_eval_plays_an_endpoint_and_prints_rows(monkeypatch, capsys):
    entries = bfcl.load_entries("base", 2)
    with ScriptedOpenAI(gold_server_answer(entries)) as server:
        monkeypatch.setenv("FLYWHEEL_POLICY_BASE_URL", server.url)
        monkeypatch.setenv("FLYWHEEL_POLICY_MODEL", "scripted-bfcl")
        assert main(["eval", "bfcl", "--policy", "openai", "--category", "base", "--limit", "2", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["benchmark"], row["category"], row["metric"], row["value"], row["entries"]) == (
        "bfcl", "base", "accuracy", 1.0, 2)
    assert row["model"] == "openai:scripted-bfcl" and row["checkpoint_id"] is None


def test_eval_refuses_a_scripted_policy_and_unknown_categories(capsys):
    assert main(["eval", "bfcl", "--policy", "teacher", "--limit", "1"]) == 2
    assert "--round rNNN, --checkpoint PATH or --policy openai" in capsys.readouterr().err
    assert main(["eval", "bfcl", "--category", "nonsense"]) == 2
    assert "unknown nonsense" in capsys.readouterr().err


def test_gold_replays_through_the_harness_and_the_benchmark(capsys):
    assert main(["eval", "bfcl", "--gold", "--category", "miss_param", "--limit", "4", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["valid"], row["total"], row["reference_valid"]) == (4, 4, 4)
