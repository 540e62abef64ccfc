"""Does aiming at failures help? The flywheel against a control with the same budget.

Both arms run the same complete rounds on the embedded default (same seeds, same held-out
set, the same training steps per round: training runs by step count, so the machine's
speed never decides how much a checkpoint trains). They differ only in the
hard-samples stage: the flywheel augments the instances the policy failed; the control
augments as many instances drawn uniformly from the round, failed or not
(``hard_sample_parents=uniform``), so the next round gets the same number of new
instances and the same training budget.

    python benchmarks/efficacy.py [--rounds 3] [--out .flywheel/efficacy] [--tasks-per-domain N]

Prints both held-out curves (pass^1, pass^k, mean reward per round) and their difference,
and writes them to <out>/efficacy.json. Each arm is a full `flywheel run`; expect the sum of
two runs' time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from flywheel_assets.heldout_report import heldout_rows
from flywheel_assets.resources import TrainingResource
from flywheel_assets.runner import run_rounds
from flywheel_assets.store import Warehouse

ARMS = {"flywheel": "failures", "control": "uniform"}


def run_arm(home: Path, rounds: int, parents: str, knobs: dict[str, Any], base: Path
            ) -> tuple[list[dict[str, Any]], float]:
    shutil.rmtree(home, ignore_errors=True)
    # both arms start from the same base: built once, copied where each home looks for it
    shutil.copytree(base, home / ".flywheel" / "checkpoints" / base.name)
    started = time.perf_counter()
    outcomes = run_rounds(home, rounds, report=lambda line: print(f"  [{parents}] {line}", flush=True),
                          overrides={"round_config": {"hard_sample_parents": parents, **knobs}})
    if len(outcomes) != rounds or not all(o.success for o in outcomes):
        failed = next((o for o in outcomes if not o.success), None)
        raise SystemExit(f"the {parents} arm failed: {failed.error if failed else 'no round ran'}")
    return heldout_rows(Warehouse(home / ".flywheel" / "warehouse.duckdb")), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=".flywheel/efficacy")
    parser.add_argument("--tasks-per-domain", type=int)
    parser.add_argument("--max-turns", type=int)
    args = parser.parse_args()
    out = Path(args.out).resolve()
    knobs = {k: v for k, v in (("tasks_per_domain", args.tasks_per_domain), ("max_turns", args.max_turns)) if v}
    curves: dict[str, list[dict[str, Any]]] = {}
    seconds: dict[str, float] = {}
    print("building the embedded base once for both arms", flush=True)
    base = TrainingResource(checkpoint_dir=str(out / "shared")).base(log=lambda line: print(f"  {line}", flush=True))
    for arm, parents in ARMS.items():
        print(f"{arm} arm (hard_sample_parents={parents})", flush=True)
        curves[arm], seconds[arm] = run_arm(out / arm, args.rounds, parents, knobs, base)
    k = curves["flywheel"][0]["k"]
    print(f"\nheld-out pass^1 / pass^{k} / mean reward per round "
          f"({curves['flywheel'][0]['tasks']} tasks × {k} trials)")
    print(f"{'round':>6} | {'flywheel':^23} | {'control (uniform)':^23} | {'Δ pass^1':>8} {'Δ reward':>8}")
    for fly, ctl in zip(curves["flywheel"], curves["control"]):
        cells = [f"{r['pass_1']:.3f} {r['pass_k']:.3f} {r['reward_mean']:.3f}" for r in (fly, ctl)]
        print(f"{fly['round']:>6} | {cells[0]:^23} | {cells[1]:^23} | "
              f"{fly['pass_1'] - ctl['pass_1']:+8.3f} {fly['reward_mean'] - ctl['reward_mean']:+8.3f}")
    print(f"wall time: flywheel {seconds['flywheel']:.0f}s, control {seconds['control']:.0f}s")
    (out / "efficacy.json").write_text(json.dumps({"curves": curves, "seconds": seconds, "knobs": knobs}, indent=2, default=str))
    print(f"written: {out / 'efficacy.json'}")


if __name__ == "__main__":
    main()
