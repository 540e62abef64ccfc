"""Does aiming at failures help? The flywheel against a control with the same budget.

Both arms run the same complete rounds on the embedded default (the same round seeds, the
same held-out set, the same training steps per round: training runs by step count, so the
machine's speed never decides how much a checkpoint trains, unless a stage's wall-clock safety
cap, ``FLYWHEEL_SFT_SECONDS`` and the like, cuts it: the table then ends with a warning naming
each cut stage, also in efficacy.json as ``time_cap_cuts``). They differ only in the
hard-samples stage: the flywheel augments the instances the policy failed; the control
augments as many instances drawn uniformly from the round, failed or not
(``hard_sample_parents=uniform``), so the next round gets the same number of new instances
and the same training budget. Both arms also train on the teacher's solutions of the round's
instances the policy failed; ``--control uniform-all`` makes those a uniform draw too, so
nothing in the control's data is chosen by the policy's failures. By default round r000 is
the cold start (the teacher's rollouts and SFT only, ``first_round_policy_rollouts=false``),
so from r001 on every round's hard samples are a trained model's failures; ``--rounds``
counts the rounds after it.

    python benchmarks/efficacy.py [--rounds 4] [--seeds 2] [--workers 2] [--eval-trials 2]
                                  [--tasks-per-domain 8] [--control uniform] [--out .flywheel/efficacy]

Each control runs in its own homes (``control-seed<n>``, ``control-uniform-all-seed<n>``), so
``--control uniform-all`` on the ``--out`` of a default run adds the control's runs only.

``--rounds 0`` runs the cold starts alone (what a setting's r000 gives, for example a larger
base: ``FLYWHEEL_BASE_HIDDEN_SIZE=256``); the rounds later run on the same ``--out`` read them.

Each (arm, seed) is a full `flywheel run` in its own home, all from one base (built once).
With the cold start, r000 is the same in both arms (it has no hard samples), so it runs once
per seed and both arms continue from a copy of it. Runs go ``--workers`` at a time, each in
its own process with an equal share of the cores. The held-out set is the default one; the
benchmark samples ``--eval-trials`` trials per task (pass^1 only) and skips the untrained
base's evaluation (it solves nothing in either arm). Prints, per round, each arm's held-out
pass^1 (mean over seeds) with a 95 % bootstrap interval over tasks, and the difference
flywheel - control with a paired interval (the same held-out tasks, resampled together);
then each arm's gain from the first round to the last, paired the same way; writes
everything to <out>/efficacy.json.

A run is never repeated: each home records the finished run it holds (``efficacy-run.json``:
the job, the FLYWHEEL_* settings, a digest of the code, the libraries' versions, the CPU kind
and threads), and a home whose record matches the job is read instead of run. So more seeds
on the same ``--out`` (``--seeds 4`` after ``--seeds 2``) run only the new seeds, and the
table covers all of them; more rounds (``--rounds 6`` after ``--rounds 4``) continue each
finished run from its last round; a change to anything that decides results runs everything
again. Ctrl-C or SIGTERM (to the benchmark's process alone is enough) stops it and the runs it
started, and a benchmark killed outright (SIGKILL) takes its runs with it within a second or two;
a run stopped midway holds no record, so the next benchmark on that ``--out`` runs it again.

Every other setting comes from the FLYWHEEL_* environment, as in ``flywheel run``: the same
comparison on a pretrained small model is, for example,
``FLYWHEEL_BASE_MODEL=smollm2 FLYWHEEL_SFT_LEARNING_RATE=2e-5 FLYWHEEL_RFT_LEARNING_RATE=1e-5
FLYWHEEL_GRPO_LEARNING_RATE=1e-6 python benchmarks/efficacy.py`` (on a GPU: see the README
for its cost on CPU). The defaults aim at the half of a round's instances the policy failed
but came nearest to solving, 4 variants each, with 900 RFT steps a round; the recipe they
replaced (every failure, 2 variants each, 300 RFT steps) is ``FLYWHEEL_HARD_SAMPLE_SHARE=1
FLYWHEEL_AUGMENT_PER_FAILURE=2 FLYWHEEL_RFT_STEPS=300 python benchmarks/efficacy.py``, and
the worst half instead of the nearest is ``FLYWHEEL_HARD_SAMPLE_PICK=worst``. ``benchmarks/limits.py``
measures, on the homes this leaves, how far the arms' data differ and how much a round learns.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

import flywheel_assets
import flywheel_training
from flywheel_assets.resources import TrainingResource
from flywheel_assets.runner import run_rounds
from flywheel_assets.settings import default_warehouse_path
from flywheel_assets.store import Warehouse
from flywheel_assets.world.pipeline import HARD_SAMPLE_PARENTS
from flywheel_training.config import TrainingConfig
from flywheel_training.evals.install import installed_versions

ARMS = {"flywheel": "failures", "control": "uniform"}  # arm -> hard_sample_parents; --control sets the second
RESAMPLES = 2000
FINISHED = "efficacy-run.json"  # in a run's home: the job it finished, its curve and time


def run_arm(home: Path, first: int, rounds: int, overrides: dict[str, dict[str, Any]], start_from: Path,
            label: str) -> tuple[dict[str, dict[str, Any]], float]:
    """{round: {"pass_1", "trials", "successes": {instance: successes}}} of one run: rounds
    ``first`` .. ``rounds - 1`` in ``home``, which starts as a copy of ``start_from`` (the
    cold-start home, or just the base's folder). A home that holds a finished run of the same
    job (``FINISHED``: same rounds, overrides, FLYWHEEL_* settings, code, libraries, CPU kind
    and threads) is not run again: its recorded curve is returned."""
    _share_cores()
    key = run_key(first, rounds, overrides)
    if (finished := finished_run(home, key)) is not None:
        print(f"  [{label}] reused: {home / FINISHED} records this very run "
              f"({finished[1]:.0f}s when it ran)", flush=True)
        return finished
    resume, ran_before = shorter_run(home, key) or (first, 0.0)
    if resume > first:  # the same job with fewer rounds: its rounds are these rounds' first ones
        print(f"  [{label}] continues the run {home / FINISHED} records from round r{resume:03d}", flush=True)
        (home / FINISHED).unlink()  # a continuation cut off midway must not pass for the shorter run
    else:
        shutil.rmtree(home, ignore_errors=True)
        if first:
            shutil.copytree(start_from, home)
        else:  # the base, built once, copied where each home looks for it
            shutil.copytree(start_from, home / ".flywheel" / "checkpoints" / start_from.name)
    started = time.perf_counter()
    outcomes = run_rounds(home, rounds, first=resume, overrides=overrides,
                          report=lambda line: print(f"  [{label}] {line}", flush=True))
    if len(outcomes) != rounds - resume or not all(o.success for o in outcomes):
        failed = next((o for o in outcomes if not o.success), None)
        raise RuntimeError(f"{label} failed: {failed.error if failed else 'no round ran'}")
    rows = Warehouse(default_warehouse_path(home)).records(
        "SELECT round, trials, pass_1, row FROM evaluations WHERE group_name = 'all' AND subject = 'checkpoint' "
        "ORDER BY round")
    curve = {r["round"]: {"pass_1": r["pass_1"], "trials": r["trials"], "successes": r["row"]["successes"]}
             for r in rows}
    took = time.perf_counter() - started + ran_before
    # written last, so a run cut off midway is never mistaken for a finished one
    (home / FINISHED).write_text(json.dumps({"key": key, "seconds": took, "curve": curve}, indent=1))
    return curve, took


def home_name(arm: str, parents: str, seed: int) -> str:
    """A run's home in ``--out``: ``<arm>-seed<n>``, and for a control other than the default
    ``control-<its hard_sample_parents>-seed<n>``, so one ``--out`` holds both controls (and
    the flywheel's runs, which either is compared with, run once)."""
    named = arm if parents == ARMS[arm] else f"{arm}-{parents}"
    return f"{named}-seed{seed}"


def cold_start_name(seed: int) -> str:
    """The home in ``--out`` of a seed's cold start r000, which both arms continue from a copy of."""
    return f"coldstart-seed{seed}"


def run_key(first: int, rounds: int, overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Everything that decides a run's rows: its job, the FLYWHEEL_* environment, the code of
    both packages, the libraries that compute, and the machine (CPU kind, torch threads)."""
    import torch

    # FLYWHEEL_HOME is where a run writes, not what it computes, and run_rounds sets it in this
    # process: a worker's next job would otherwise see the last job's home
    settings = {k: v for k, v in sorted(os.environ.items()) if k.startswith("FLYWHEEL_") and k != "FLYWHEEL_HOME"}
    return {"first": first, "rounds": rounds, "overrides": json.loads(json.dumps(overrides, sort_keys=True)),
            "settings": settings, "code": code_digest(), "libraries": library_versions(),
            "machine": machine(), "threads": torch.get_num_threads()}


def recorded_run(home: Path) -> dict[str, Any] | None:
    """The finished run ``home`` records (``FINISHED``: its key, curve and seconds), else None."""
    try:
        record = json.loads((home / FINISHED).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("key"), dict) or "curve" not in record:
        return None
    return record


def finished_run(home: Path, key: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], float] | None:
    """(curve, seconds) recorded in ``home`` by a finished run with exactly ``key``, else None."""
    record = recorded_run(home)
    if record is None or record["key"] != key:
        return None
    return record["curve"], float(record.get("seconds", 0.0))


def shorter_run(home: Path, key: dict[str, Any]) -> tuple[int, float] | None:
    """(its rounds, its seconds) where ``home`` holds a finished run of the same job as ``key``
    but fewer rounds: rounds are run in order and none depends on how many follow, so the
    longer job continues it (as ``flywheel run --from-round`` continues a home)."""
    record = recorded_run(home)
    if record is None or {**record["key"], "rounds": key["rounds"]} != key:
        return None
    rounds = record["key"].get("rounds")
    if not isinstance(rounds, int) or not key["first"] < rounds < key["rounds"]:
        return None
    return rounds, float(record.get("seconds", 0.0))


def time_cap_cuts(homes: list[Path]) -> list[dict[str, Any]]:
    """Every checkpoint in ``homes`` that a wall-clock safety cap cut short, once each (an arm's
    home holds a copy of its cold start's r000): such a checkpoint, and every figure after it,
    depends on the machine's speed, which the table must say."""
    cap_settings = {s.name: s.env for s in TrainingConfig.specs()}  # stage "sft" -> sft_seconds' variable
    cuts: list[dict[str, Any]] = []
    seen: set[str] = set()
    for home in homes:
        path = default_warehouse_path(home)
        if not path.exists():
            continue
        for row in Warehouse(path).records("SELECT round, meta, plan FROM policy_checkpoints ORDER BY round"):
            checkpoint = (row["meta"] or {}).get("sha256") or f"{home.name}/{row['round']}"
            if checkpoint in seen:
                continue
            seen.add(checkpoint)
            cuts += [{"home": home.name, "round": row["round"], "stage": stage["stage"], "steps": stage["steps"],
                      "planned_steps": stage["planned_steps"], "setting": cap_settings[f"{stage['stage']}_seconds"]}
                     for stage in (row["plan"] or {}).get("executed", []) if stage.get("cut_by_time_cap")]
    return cuts


def code_digest() -> str:
    """sha256 over both packages' files (sources, policies, SQL), by path and content."""
    digest = hashlib.sha256()
    for package in (flywheel_assets, flywheel_training):
        root = Path(package.__file__).parent
        for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(f"{package.__name__}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """The installed versions of the libraries that compute a run ("" where absent)."""
    installed = installed_versions()
    return {name: installed.get(name, "") for name in
            ("torch", "transformers", "trl", "accelerate", "datasets", "numpy", "duckdb", "dagster")}


def _share_cores() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("EFFICACY_THREADS", "1")))


def run_all(jobs: list[tuple], workers: int) -> list[tuple[dict[str, dict[str, Any]], float]]:
    """``run_arm`` over ``jobs``, ``workers`` processes at a time (in order when 1)."""
    os.environ["EFFICACY_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, workers)))
    if workers <= 1:
        return [run_arm(*job) for job in jobs]
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=end_with_parent, initargs=(os.getpid(),))
    try:
        return list(pool.map(run_arm, *zip(*jobs)))
    except (KeyboardInterrupt, SystemExit):
        # A worker whose benchmark is gone never exits by itself: each spawned worker holds both
        # ends of the job queue, so it waits on it forever once its run ends (and a run Dagster
        # was told to stop only stops between steps). An interrupted benchmark ends its runs now;
        # their homes hold no FINISHED record, so the next benchmark runs them again.
        for worker in multiprocessing.active_children():
            worker.kill()
        raise
    finally:
        # after a failed run: the runs not started are dropped, the running ones finish and
        # keep their records for the next benchmark
        pool.shutdown(cancel_futures=True)


def end_with_parent(parent: int) -> None:
    """A worker's initializer: the worker exits once the benchmark's process ``parent`` is gone.
    A benchmark killed outright (SIGKILL, the OOM killer) runs no handler to end its workers,
    and each would otherwise finish its run and then wait on the job queue forever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)  # its run is cut off midway: its home keeps no record

    threading.Thread(target=watch, name="end-with-benchmark", daemon=True).start()


def stop_on_signals() -> None:
    """Ctrl-C and SIGTERM (``kill``, a job scheduler) stop the benchmark with an exception in
    the main thread, so ``run_all`` ends the runs it started instead of leaving them orphaned."""

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    # Importing polars puts its own C-level SIGINT handler in front of Python's. It passes the
    # signal on, but with SA_RESTART, so the main thread's wait on the pool resumes and Ctrl-C
    # only lands once the runs under way end; installing Python's handler again makes it land
    # at once (and keeps SIGINT ignored where the benchmark was started so).
    signal.signal(signal.SIGINT, signal.getsignal(signal.SIGINT))


def per_task_rates(curves: list[dict[str, dict[str, Any]]], round_key: str, tasks: list[str]) -> np.ndarray:
    """Each held-out task's success rate at ``round_key``, averaged over the seeds' runs."""
    return np.mean([[c[round_key]["successes"][t] / c[round_key]["trials"] for t in tasks] for c in curves], axis=0)


def interval(values: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean over tasks (one index draw per resample,
    shared by the arms when ``values`` is a paired difference)."""
    means = values[rng.integers(0, len(values), size=(RESAMPLES, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4,
                        help="rounds after the cold start r000 (0: the cold starts alone, to see what a setting's "
                             "r000 gives before running the rounds on the same --out)")
    parser.add_argument("--seeds", type=int, default=2, help="round seeds per arm (0, 1, ...)")
    parser.add_argument("--workers", type=int, default=2, help="runs at a time, each in its own process")
    parser.add_argument("--eval-trials", type=int, default=2, help="held-out trials per task")
    parser.add_argument("--out", default=".flywheel/efficacy")
    parser.add_argument("--tasks-per-domain", type=int, default=8,
                        help="complete tasks per pack and round (the flywheel's default is 12; 8 fits the "
                             "benchmark in an hour on 2 cores)")
    parser.add_argument("--max-turns", type=int)
    parser.add_argument("--control", choices=[p for p in HARD_SAMPLE_PARENTS if p != ARMS["flywheel"]],
                        default=ARMS["control"],
                        help="the control's hard_sample_parents: uniform (its hard-sample parents drawn uniformly) or "
                             "uniform-all (the teacher's worked solutions in its training data too: as many, of "
                             "instances drawn uniformly, where both arms otherwise take those of the failures)")
    parser.add_argument("--no-cold-start", action="store_true",
                        help="let the untrained base play r000 too (the old first round; r000 then runs per arm)")
    args = parser.parse_args()
    stop_on_signals()
    if args.rounds < 0 or (args.rounds == 0 and args.no_cold_start):
        parser.error("--rounds counts the rounds after the cold start: 0 (the cold starts alone) or more")
    out = Path(args.out).resolve()
    arms = {**ARMS, "control": args.control}
    knobs: dict[str, Any] = {k: v for k, v in (("tasks_per_domain", args.tasks_per_domain),
                                                 ("max_turns", args.max_turns)) if v}
    knobs["first_round_policy_rollouts"] = args.no_cold_start
    training = {"eval_trials": args.eval_trials, "evaluate_base": False, "eval_greedy": False}
    started = time.perf_counter()
    print("building (or converting: FLYWHEEL_BASE_MODEL) the base once for every run", flush=True)
    # the FLYWHEEL_* settings the runs will read, so the runs find this base under its name
    settings = TrainingConfig.from_env(checkpoint_dir=str(out / "shared")).values()
    base = TrainingResource(**settings).base(log=lambda line: print(f"  {line}", flush=True))

    def overrides(seed: int, parents: str) -> dict[str, dict[str, Any]]:
        return {"round_config": {"hard_sample_parents": parents, "seed": seed, **knobs}, "training": training}

    seeds = range(args.seeds)
    shared: dict[int, tuple[dict[str, dict[str, Any]], float]] = {}
    first = 0
    if not args.no_cold_start:
        print(f"the cold start r000, once per seed ({args.seeds})", flush=True)
        done = run_all([(out / cold_start_name(seed), 0, 1, overrides(seed, "failures"), base,
                         f"cold start seed {seed}") for seed in seeds], args.workers)
        shared = dict(zip(seeds, done))
        first = 1
    if args.rounds == 0:  # the cold starts alone; a later run on this --out reads them
        results = iter([(shared[seed][0], 0.0) for seed in seeds for _ in arms])
    else:
        jobs = [(out / home_name(arm, parents, seed), first, args.rounds + 1, overrides(seed, parents),
                 out / cold_start_name(seed) if first else base, f"{arm} seed {seed}")
                for seed in seeds for arm, parents in arms.items()]
        print(f"{len(jobs)} runs of rounds r{first:03d}..r{args.rounds:03d}, {args.workers} at a time", flush=True)
        results = iter(run_all(jobs, args.workers))
    curves: dict[str, list[dict[str, dict[str, Any]]]] = {arm: [] for arm in arms}
    seconds: dict[str, list[float]] = {arm: [] for arm in arms}
    for seed in seeds:
        for arm in arms:
            curve, took = next(results)
            curves[arm].append(curve)
            seconds[arm].append(took + (shared[seed][1] if seed in shared else 0.0))
    rounds = sorted(curves["flywheel"][0])
    tasks = sorted(curves["flywheel"][0][rounds[0]]["successes"])
    rng = np.random.default_rng(0)
    table = []
    print(f"\nheld-out pass^1 per round: mean over {args.seeds} seed(s), 95% bootstrap CI over {len(tasks)} tasks")
    print(f"{'round':>6} | {'flywheel':^22} | {f'control ({args.control})':^22} | {'flywheel - control':^24}")
    for round_key in rounds:
        fly, ctl = (per_task_rates(curves[arm], round_key, tasks) for arm in arms)
        row = {"round": round_key, "flywheel": float(fly.mean()), "flywheel_ci": interval(fly, rng),
               "control": float(ctl.mean()), "control_ci": interval(ctl, rng),
               "difference": float((fly - ctl).mean()), "difference_ci": interval(fly - ctl, rng)}
        table.append(row)
        cells = [f"{row[k]:.3f} [{row[k + '_ci'][0]:.3f}, {row[k + '_ci'][1]:.3f}]"
                 for k in ("flywheel", "control", "difference")]
        print(f"{round_key:>6} | {cells[0]:^22} | {cells[1]:^22} | {cells[2]:^24}")
    first_key, last_key = rounds[0], rounds[-1]
    gains = {}
    for arm in arms:  # the same tasks at both rounds, resampled together
        gain = per_task_rates(curves[arm], last_key, tasks) - per_task_rates(curves[arm], first_key, tasks)
        gains[arm] = {"gain": float(gain.mean()), "gain_ci": interval(gain, rng)}
    print(f"{last_key} - {first_key} (paired): " + ", ".join(
        f"{arm} {g['gain']:+.3f} [{g['gain_ci'][0]:+.3f}, {g['gain_ci'][1]:+.3f}]" for arm, g in gains.items()))
    total = time.perf_counter() - started
    print(f"wall time: {total:.0f}s in all with {args.workers} worker(s) (run time, cold start included: flywheel "
          f"{sum(seconds['flywheel']):.0f}s, control {sum(seconds['control']):.0f}s)")
    homes = [out / cold_start_name(seed) for seed in seeds] + [
        out / home_name(arm, parents, seed) for seed in seeds for arm, parents in arms.items()]
    if cuts := time_cap_cuts(homes):
        print(f"WARNING: the wall-clock safety cap cut {len(cuts)} training stage(s), so these figures depend on this "
              "machine's speed (raise the setting named and run again):")
        for cut in cuts:
            print(f"  {cut['home']} {cut['round']}: {cut['stage']} stopped after {cut['steps']} of "
                  f"{cut['planned_steps']} steps ({cut['setting']})")
    (out / "efficacy.json").write_text(json.dumps(
        {"table": table, "gains": {"from": first_key, "to": last_key, **gains}, "curves": curves,
         "seconds": seconds, "knobs": knobs, "training": training, "seeds": args.seeds, "control": args.control,
         "workers": args.workers, "machine": machine(), "total_seconds": total,
         "time_cap_cuts": cuts}, indent=2, default=str))
    print(f"written: {out / 'efficacy.json'}")


def machine() -> dict[str, Any]:
    """What the figures depend on beyond the settings: float kernels differ between CPU
    instruction sets, so the same seed gives other checkpoints on another kind of CPU."""
    import platform

    import torch

    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpus": os.cpu_count(),
            "machine": platform.machine(), "torch": torch.__version__}


if __name__ == "__main__":
    main()
