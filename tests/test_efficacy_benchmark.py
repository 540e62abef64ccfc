"""benchmarks/efficacy.py reads a home's finished run instead of running it again, and only
when everything that decides the run's rows is the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.benchmarks import load_benchmark


@pytest.fixture(scope="module")
def efficacy():
    return load_benchmark("efficacy")


OVERRIDES = {"round_config": {"hard_sample_parents": "failures", "seed": 0}, "training": {"eval_trials": 2}}
CURVE = {"r001": {"pass_1": 0.5, "trials": 2, "successes": {"t1": 1, "t2": 1}}}
SMALL_BASE = {"FLYWHEEL_BASE_HIDDEN_SIZE": "16", "FLYWHEEL_BASE_LAYERS": "1", "FLYWHEEL_BASE_INDUCTION_STEPS": "0",
              "FLYWHEEL_BASE_RECALL_STEPS": "0"}  # a base built in seconds


def record(efficacy, home: Path, key: dict, curve: dict = CURVE) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / efficacy.FINISHED).write_text(json.dumps({"key": key, "seconds": 12.5, "curve": curve}))


@pytest.fixture
def small_base(efficacy, monkeypatch):
    """A small base that ``efficacy.main()`` builds for real, at the threads ``--workers 1``
    gives a run; the process's torch threads and the signal handlers ``main()`` installs are
    restored after."""
    import os
    import signal

    import torch

    threads = torch.get_num_threads()
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for name, value in SMALL_BASE.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("EFFICACY_THREADS", str(os.cpu_count() or 1))
    efficacy._share_cores()
    yield
    torch.set_num_threads(threads)
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def main_overrides(parents: str, seed: int) -> dict:
    """The overrides ``efficacy.main()`` gives a run with its default flags."""
    return {"round_config": {"hard_sample_parents": parents, "seed": seed, "tasks_per_domain": 8,
                             "first_round_policy_rollouts": False},
            "training": {"eval_trials": 2, "evaluate_base": False, "eval_greedy": False}}


def test_a_home_holding_the_same_finished_run_is_read_not_run(efficacy, tmp_path, monkeypatch):
    monkeypatch.setenv("EFFICACY_THREADS", "1")
    efficacy._share_cores()
    home = tmp_path / "flywheel-seed0"
    record(efficacy, home, efficacy.run_key(1, 2, OVERRIDES))
    (home / "left-alone").write_text("a run would have wiped the home")
    curve, seconds = efficacy.run_arm(home, 1, 2, OVERRIDES, tmp_path / "no-cold-start-here", "flywheel seed 0")
    assert (curve, seconds) == (CURVE, 12.5)
    assert (home / "left-alone").exists()


def test_anything_that_decides_the_rows_makes_a_recorded_run_stale(efficacy, tmp_path, monkeypatch):
    monkeypatch.setenv("EFFICACY_THREADS", "1")
    efficacy._share_cores()
    home = tmp_path / "control-seed1"
    record(efficacy, home, efficacy.run_key(1, 5, OVERRIDES))
    assert efficacy.finished_run(home, efficacy.run_key(1, 5, OVERRIDES)) == (CURVE, 12.5)
    assert efficacy.finished_run(home, efficacy.run_key(1, 4, OVERRIDES)) is None  # fewer rounds
    assert efficacy.finished_run(home, efficacy.run_key(
        1, 5, {**OVERRIDES, "round_config": {"hard_sample_parents": "uniform", "seed": 0}})) is None  # the other arm
    monkeypatch.setenv("FLYWHEEL_MAX_CARRIED", "0")
    assert efficacy.finished_run(home, efficacy.run_key(1, 5, OVERRIDES)) is None  # a setting from the environment
    monkeypatch.delenv("FLYWHEEL_MAX_CARRIED")
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "flywheel-seed0"))  # left by a worker's previous run
    assert efficacy.finished_run(home, efficacy.run_key(1, 5, OVERRIDES)) == (CURVE, 12.5)
    stale = efficacy.run_key(1, 5, OVERRIDES)
    stale["code"] = "0" * 64  # recorded by other code
    record(efficacy, home, stale)
    assert efficacy.finished_run(home, efficacy.run_key(1, 5, OVERRIDES)) is None


def test_a_missing_or_unreadable_record_means_the_run_did_not_finish(efficacy, tmp_path):
    home = tmp_path / "flywheel-seed2"
    key = {"first": 1}
    assert efficacy.finished_run(home, key) is None
    home.mkdir()
    (home / efficacy.FINISHED).write_text('{"key": {"first": 1}, "curve"')  # cut off mid-write
    assert efficacy.finished_run(home, key) is None
    (home / efficacy.FINISHED).write_text("[1, 2]")
    assert efficacy.finished_run(home, key) is None


def test_the_code_digest_follows_the_packages_files(efficacy, tmp_path, monkeypatch):
    import flywheel_assets

    before = efficacy.code_digest()
    assert before == efficacy.code_digest() and len(before) == 64
    copy = tmp_path / "flywheel_assets"
    copy.mkdir()
    (copy / "__init__.py").write_text("")
    monkeypatch.setattr(flywheel_assets, "__file__", str(copy / "__init__.py"))
    assert efficacy.code_digest() != before


def test_rounds_0_reports_the_cold_starts_alone_and_runs_no_arm(efficacy, small_base, tmp_path, monkeypatch):
    import sys

    curves = [{"r000": {"pass_1": 0.25, "trials": 2, "successes": {"t1": 1, "t2": 0}}},
              {"r000": {"pass_1": 0.75, "trials": 2, "successes": {"t1": 2, "t2": 1}}}]
    for seed, curve in enumerate(curves):  # the cold starts are recorded
        record(efficacy, tmp_path / efficacy.cold_start_name(seed), efficacy.run_key(0, 1, main_overrides("failures", seed)),
               curve)
    monkeypatch.setattr(sys, "argv", ["efficacy.py", "--rounds", "0", "--workers", "1", "--out", str(tmp_path)])
    efficacy.main()
    written = json.loads((tmp_path / "efficacy.json").read_text())
    assert [row["round"] for row in written["table"]] == ["r000"]
    assert written["table"][0]["flywheel"] == written["table"][0]["control"] == 0.5  # both seeds' tasks
    assert not any(tmp_path.glob("flywheel-seed*")) and not any(tmp_path.glob("control-seed*"))
    monkeypatch.setattr(sys, "argv", ["efficacy.py", "--rounds", "0", "--no-cold-start", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        efficacy.main()


def checkpoints(home: Path, rows: list[tuple[str, str, list[dict]]]) -> None:
    """``policy_checkpoints`` rows (round, sha256, the stages executed) in ``home``'s warehouse."""
    import duckdb

    from flywheel_assets.store import Warehouse

    store = Warehouse(home / ".flywheel" / "warehouse.duckdb")
    store.ensure_schema()
    with duckdb.connect(str(store.path)) as con:
        for round_key, sha256, executed in rows:
            con.execute("INSERT INTO policy_checkpoints (round, meta, plan) VALUES (?, ?, ?)",
                        [round_key, json.dumps({"sha256": sha256}), json.dumps({"executed": executed})])


def stage(name: str, steps: int, planned: int) -> dict:
    return {"stage": name, "steps": steps, "planned_steps": planned, "cut_by_time_cap": steps < planned}


def test_each_checkpoint_a_time_cap_cut_is_named_once_with_the_setting_to_raise(efficacy, tmp_path):
    cold_start = [("r000", "a", [stage("sft", 46, 48)])]  # every arm's home holds a copy of it
    checkpoints(tmp_path / "coldstart-seed0", cold_start)
    checkpoints(tmp_path / "flywheel-seed0", cold_start + [("r001", "b", [stage("grpo", 20, 20), stage("rft", 16, 16)])])
    checkpoints(tmp_path / "control-seed0", cold_start + [("r001", "c", [stage("grpo", 20, 20), stage("rft", 9, 16)])])
    homes = [tmp_path / name for name in ("coldstart-seed0", "flywheel-seed0", "control-seed0", "control-seed1")]
    cuts = efficacy.time_cap_cuts(homes)  # control-seed1 never ran: no warehouse, nothing to say
    assert [(c["home"], c["round"], c["stage"], c["steps"], c["planned_steps"], c["setting"]) for c in cuts] == [
        ("coldstart-seed0", "r000", "sft", 46, 48, "FLYWHEEL_SFT_SECONDS"),
        ("control-seed0", "r001", "rft", 9, 16, "FLYWHEEL_RFT_SECONDS")]
    # an arm's home alone names the copied cut as its own
    assert [(c["home"], c["round"]) for c in efficacy.time_cap_cuts(homes[1:2])] == [("flywheel-seed0", "r000")]
    assert efficacy.time_cap_cuts([]) == []


def test_the_table_warns_of_a_cold_start_the_time_cap_cut(efficacy, small_base, tmp_path, monkeypatch, capsys):
    import sys

    curve = {"r000": {"pass_1": 0.5, "trials": 2, "successes": {"t1": 1, "t2": 1}}}
    for seed in (0, 1):
        record(efficacy, tmp_path / efficacy.cold_start_name(seed),
               efficacy.run_key(0, 1, main_overrides("failures", seed)), curve)
    checkpoints(tmp_path / efficacy.cold_start_name(1), [("r000", "a", [stage("sft", 30, 48)])])
    checkpoints(tmp_path / efficacy.cold_start_name(0), [("r000", "b", [stage("sft", 48, 48)])])
    monkeypatch.setattr(sys, "argv", ["efficacy.py", "--rounds", "0", "--workers", "1", "--out", str(tmp_path)])
    efficacy.main()
    printed = capsys.readouterr().out
    assert "WARNING: the wall-clock safety cap cut 1 training stage(s)" in printed
    assert "coldstart-seed1 r000: sft stopped after 30 of 48 steps (FLYWHEEL_SFT_SECONDS)" in printed
    written = json.loads((tmp_path / "efficacy.json").read_text())
    assert [(c["home"], c["steps"]) for c in written["time_cap_cuts"]] == [("coldstart-seed1", 30)]


def test_each_control_runs_in_its_own_homes_beside_the_flywheels(efficacy, small_base, tmp_path, monkeypatch):
    import sys

    assert efficacy.home_name("flywheel", "failures", 1) == "flywheel-seed1"
    assert efficacy.home_name("control", "uniform", 1) == "control-seed1"  # the default control's, as before
    assert efficacy.home_name("control", "uniform-all", 1) == "control-uniform-all-seed1"
    monkeypatch.setattr(efficacy, "run_rounds", lambda *_, **__: pytest.fail("a recorded run was run again"))
    cold = {"r000": {"pass_1": 0.0, "trials": 2, "successes": {"t1": 0, "t2": 0}}}
    record(efficacy, tmp_path / efficacy.cold_start_name(0), efficacy.run_key(0, 1, main_overrides("failures", 0)), cold)
    for home, parents, solved in (("flywheel-seed0", "failures", 2), ("control-seed0", "uniform", 1),
                                  ("control-uniform-all-seed0", "uniform-all", 0)):
        curve = {**cold, "r001": {"pass_1": solved / 2, "trials": 2, "successes": {"t1": solved, "t2": solved}}}
        record(efficacy, tmp_path / home, efficacy.run_key(1, 2, main_overrides(parents, 0)), curve)
    for control, expected in (("uniform", 0.5), ("uniform-all", 0.0)):
        monkeypatch.setattr(sys, "argv", ["efficacy.py", "--rounds", "1", "--seeds", "1", "--workers", "1",
                                          "--control", control, "--out", str(tmp_path)])
        efficacy.main()
        written = json.loads((tmp_path / "efficacy.json").read_text())
        last = written["table"][-1]
        assert (written["control"], last["round"], last["flywheel"], last["control"]) == (
            control, "r001", 1.0, expected)


def test_more_rounds_continue_a_finished_run_from_its_last_round(efficacy, tmp_path, monkeypatch):
    import duckdb

    from flywheel_assets.store import Warehouse
    from flywheel_assets.runner import RoundOutcome

    monkeypatch.setenv("EFFICACY_THREADS", "1")
    efficacy._share_cores()
    home = tmp_path / "flywheel-seed0"
    store = Warehouse(home / ".flywheel" / "warehouse.duckdb")
    store.ensure_schema()
    calls = []

    def play(home_, rounds, *, first, overrides, report):  # the rounds' evaluations, as run_rounds writes them
        calls.append((first, rounds))
        with duckdb.connect(str(store.path)) as con:
            for i in range(first, rounds):
                con.execute("INSERT INTO evaluations (round, group_name, subject, trials, pass_1, row) "
                            "VALUES (?, 'all', 'checkpoint', 2, 0.5, ?)",
                            [f"r{i:03d}", json.dumps({"successes": {"t1": 1, "t2": i % 3}})])
        return [RoundOutcome(f"r{i:03d}", True, 1.0, "run") for i in range(first, rounds)]

    monkeypatch.setattr(efficacy, "run_rounds", play)
    play(home, 5, first=1, overrides=OVERRIDES, report=print)  # a finished four-round run, recorded
    calls.clear()
    record(efficacy, home, efficacy.run_key(1, 5, OVERRIDES), {"r001": CURVE["r001"]})
    (home / "left-alone").write_text("a rerun would have wiped the home")
    curve, seconds = efficacy.run_arm(home, 1, 7, OVERRIDES, tmp_path / "no-cold-start-here", "flywheel seed 0")
    assert calls == [(5, 7)]  # r005 and r006 only
    assert sorted(curve) == [f"r{i:03d}" for i in range(1, 7)] and curve["r006"]["successes"] == {"t1": 1, "t2": 0}
    assert seconds >= 12.5 and (home / "left-alone").exists()
    assert efficacy.finished_run(home, efficacy.run_key(1, 7, OVERRIDES)) == (curve, seconds)
    assert efficacy.shorter_run(home, efficacy.run_key(1, 5, OVERRIDES)) is None  # it holds more rounds
    # a shorter run of another job (the other arm) is not continued: the home runs from the start
    record(efficacy, home, efficacy.run_key(1, 5, {**OVERRIDES, "round_config": {"hard_sample_parents": "uniform",
                                                                                  "seed": 0}}))
    assert efficacy.shorter_run(home, efficacy.run_key(1, 7, OVERRIDES)) is None


def test_limits_reads_the_settings_each_home_recorded_not_the_current_environment(efficacy, tmp_path, monkeypatch):
    from flywheel_assets.world.pipeline import RoundConfig

    limits = load_benchmark("limits")
    assert limits.FINISHED == efficacy.FINISHED
    overrides = {"round_config": {"hard_sample_parents": "uniform", "seed": 0, "max_turns": 9},
                 "training": {"eval_trials": 3, "evaluate_base": False}}
    monkeypatch.setenv("FLYWHEEL_ID_AUGMENT", "2")
    monkeypatch.setenv("FLYWHEEL_TRAIN_BATCH_SIZE", "4")
    home = tmp_path / "control-seed0"
    record(efficacy, home, efficacy.run_key(1, 2, overrides))  # the run's environment, recorded
    monkeypatch.setenv("FLYWHEEL_ID_AUGMENT", "7")  # limits.py run later, under other settings
    monkeypatch.delenv("FLYWHEEL_TRAIN_BATCH_SIZE")
    config, max_turns = limits.run_settings(home, tmp_path / "shared")
    assert (config.id_augment, config.batch_size, config.eval_trials, max_turns) == (2, 4, 3, 9)
    assert config.checkpoint_dir == str(tmp_path / "shared")
    config, max_turns = limits.run_settings(tmp_path / "a-home-without-a-record", tmp_path / "shared")
    assert (config.id_augment, max_turns) == (7, RoundConfig().max_turns)


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT", "SIGKILL"])
def test_a_stopped_benchmark_ends_the_runs_its_workers_hold(efficacy, tmp_path, stop):
    """SIGTERM, Ctrl-C's SIGINT, or SIGKILL to the benchmark alone (not to its process group)
    ends its worker processes too: left alone they would wait on the job queue forever,
    orphaned, each holding a run's memory."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    log = tmp_path / "log"
    benchmark = [efficacy.__file__, "--seeds", "2", "--rounds", "1", "--out", str(tmp_path / "out")]
    # as from a terminal: SIGINT at its default, whatever this test process inherited
    as_in_a_terminal = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                        "os.execv(sys.argv[1], sys.argv[1:])")
    with log.open("w") as out:
        bench = subprocess.Popen([sys.executable, "-c", as_in_a_terminal, sys.executable, *benchmark],
                                 env={**os.environ, **SMALL_BASE}, stdout=out, stderr=subprocess.STDOUT)
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 300
        while "[cold start seed" not in log.read_text() and bench.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert bench.poll() is None, log.read_text()[-3000:]
        assert "[cold start seed" in log.read_text(), "no worker started a run"
        children = psutil.Process(bench.pid).children(recursive=True)
        workers = [c for c in children if "spawn_main" in " ".join(c.cmdline())]
        assert len(workers) == 2
        bench.send_signal(getattr(signal, stop))
        status = bench.wait(timeout=120)
        _, alive = psutil.wait_procs(children, timeout=60)
        assert alive == []
        # stopped by the exception the signal raised in its main thread
        if stop == "SIGTERM":
            assert status == 128 + signal.SIGTERM  # SystemExit
        elif stop == "SIGKILL":
            assert status == -signal.SIGKILL  # no handler ran: the workers ended themselves
        else:
            assert status != 0 and log.read_text().rstrip().endswith("KeyboardInterrupt")
        assert not any((tmp_path / "out").glob("coldstart-seed*/efficacy-run.json"))  # no run passes as finished
    finally:
        if bench.poll() is None:
            bench.kill()
        for child in children:
            if child.is_running():
                child.kill()
