"""Settings are declared once: the Dagster resources, the `flywheel` flags and the README's
table are derived from the settings groups, so every setting has one default everywhere, and
an invalid value fails with a message naming the setting and what is allowed."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flywheel_assets.cli import build_parser, main
from flywheel_assets.cli_settings import overrides_from
from flywheel_assets.resources import RESOURCES
from flywheel_assets.runner import run_config
from flywheel_assets.settings import GROUPS, settings_markdown
from flywheel_assets.world.settings import SettingsError

ROOT = Path(__file__).resolve().parents[1]


def _run_parser() -> argparse.ArgumentParser:
    verbs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return verbs.choices["run"]


def test_every_setting_has_one_default_in_the_group_the_resource_and_the_cli():
    run = _run_parser()
    flags = {action.option_strings[0]: action for action in run._actions if action.option_strings}
    assert set(RESOURCES) == set(GROUPS)
    for key, group in GROUPS.items():
        resource_fields = RESOURCES[key].model_fields
        for spec in group.specs():
            assert resource_fields[spec.name].default == spec.default == group().values()[spec.name], spec.name
            assert spec.env.startswith("FLYWHEEL_") and spec.help
            if spec.flag:
                action = flags[spec.flag]
                assert action.default is None  # a flag not given overrides nothing ...
                assert repr(spec.default) in action.help and spec.env in action.help  # ... and shows the default
    # the round settings the engine uses are the same definition as the resource's
    from flywheel_assets.world.pipeline import RoundConfig

    assert GROUPS["round_config"] is RoundConfig
    envs = [spec.env for group in GROUPS.values() for spec in group.specs()]
    assert len(envs) == len(set(envs))


def test_the_readme_shows_the_generated_settings_table():
    assert settings_markdown() in (ROOT / "README.md").read_text()


def test_flags_override_only_what_they_name_and_keep_the_environment(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_POLICY_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("FLYWHEEL_POLICY_MODEL", "served")
    monkeypatch.setenv("FLYWHEEL_TASKS_PER_DOMAIN", "3")
    args = _run_parser().parse_args(["--rounds", "1", "--policy", "openai", "--max-turns", "5"])
    overrides = overrides_from(args)
    assert overrides == {"policy": {"name": "openai"}, "round_config": {"max_turns": 5}}
    resources = run_config(overrides=overrides)["resources"]

    def value(key: str, name: str):  # run config may carry an environment value as {"env": NAME}
        given = resources[key]["config"].get(name, GROUPS[key]().values()[name])
        return int(os.environ[given["env"]]) if isinstance(given, dict) and name == "tasks_per_domain" else (
            os.environ[given["env"]] if isinstance(given, dict) else given)

    assert value("policy", "base_url") == "http://127.0.0.1:9/v1"
    assert value("policy", "model") == "served" and value("policy", "name") == "openai"
    assert value("round_config", "tasks_per_domain") == 3 and value("round_config", "max_turns") == 5
    assert value("training", "sft_steps") == 1200  # untouched settings keep their defaults


@pytest.mark.parametrize("argv, env, named, allowed", [
    (["--tasks-per-domain", "-3"], {}, "round.tasks_per_domain (FLYWHEEL_TASKS_PER_DOMAIN, --tasks-per-domain)",
     "greater than or equal to 1"),
    (["--domains", "retail,atlantis"], {}, "round.domains (FLYWHEEL_DOMAINS, --domains)",
     "banking, retail, telecom, travel"),
    ([], {"FLYWHEEL_POLICY": "gpt-nothing"}, "policy.name (FLYWHEEL_POLICY, --policy)",
     "embedded, teacher, teacher-jit, random, do-nothing, flaky-teacher, openai"),
    ([], {"FLYWHEEL_MAX_TURNS": "many"}, "FLYWHEEL_MAX_TURNS='many'", "is not an integer"),
    (["--fail-share", "1.5"], {}, "policy.fail_share (FLYWHEEL_FAIL_SHARE, --fail-share)", "less than or equal to 1"),
    (["--base-layers", "3"], {"FLYWHEEL_BASE_MODEL": "smollm2"},
     "training.base_layers (FLYWHEEL_BASE_LAYERS, --base-layers) build the embedded base",
     "converted, not built: unset one or the other"),
])
def test_an_invalid_setting_fails_before_anything_runs_naming_it(tmp_path, monkeypatch, capsys, argv, env, named,
                                                                 allowed):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["run", "--home", str(tmp_path), "--rounds", "1", *argv]) == 2
    err = capsys.readouterr().err
    assert named in err and allowed in err
    assert not (tmp_path / ".flywheel").exists()  # nothing was started or written


def test_the_settings_verb_lists_values_and_defaults(monkeypatch, capsys):
    monkeypatch.setenv("FLYWHEEL_MAX_TURNS", "7")
    assert main(["settings", "--json"]) == 0
    rows = {r["setting"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["round_config.max_turns"]["value"] == 7 and rows["round_config.max_turns"]["default"] == 12
    assert rows["policy.name"]["flag"] == "--policy" and rows["training.sft_steps"]["environment"] == "FLYWHEEL_SFT_STEPS"


def test_invalid_group_values_name_every_problem():
    with pytest.raises(SettingsError, match="round.domains .* has unknown 'nowhere'"):
        GROUPS["round_config"].create(domains="retail,nowhere")
    with pytest.raises(SettingsError, match="unknown setting 'tasks'"):
        GROUPS["round_config"].create(tasks=3)


def test_engine_only_verbs_load_neither_dagster_nor_torch(tmp_path):
    code = ("import sys; from flywheel_assets.cli import main; "
            "rc = main(['rollout', '--per-domain', '1', '--domains', 'retail', '--max-turns', '12']); "
            "rc2 = main(['expansion', '--tasks-per-domain', '1', '--domains', 'retail', '--json']); "
            "print(rc, rc2, sorted(m for m in ('dagster', 'torch', 'transformers') if m in sys.modules))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "0 0 []"
