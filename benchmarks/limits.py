"""What limits the flywheel's lead over the uniform control? Measurements on the homes that
``benchmarks/efficacy.py`` leaves in its ``--out`` folder (run that first).

    python benchmarks/limits.py [--out .flywheel/efficacy] [--trials 2] [--sample 200]

Three candidate limits, each measured per arm and seed, round by round:

- **data**: the arms differ only in which instances the hard-samples stage augments. The
  control draws as many parents uniformly as the flywheel has failures, so part of its
  parents are failures too; where both arms play the same rollouts (r001: same cold start,
  same seed) the overlap of the two parent sets is measured directly. Also: the share of
  prohibited actions among a round's failed instances and among its failed parents (the
  failure mix ``hard_sample_pick`` keeps; ``limits.json`` has every type's counts), the share of
  each round's RFT rows that are hard-sample solutions, and the expected share of distinct
  rows RFT draws at least once (steps × batch draws from rows × (1 + id copies)). The domain
  mix of the failures against the parents' (``limits.json``), and the last round's held-out
  difference per domain and phase, flywheel − each control, mean over the seeds both ran.
- **reward signal**: GRPO's groups with a reward difference (the rest give no gradient).
- **capacity and training per round**: a checkpoint played (``--trials`` trials at the
  held-out temperature) on up to ``--sample`` instances it was trained on, against its
  held-out pass^1: the cold start's checkpoint on the instances of its own SFT data, and each
  run's last checkpoint on its last round's instances and kept hard samples (the RFT data's
  instances), also played by the checkpoint that round started from. A checkpoint that
  solves the instances it trained on but not held-out ones is limited by generalisation; one
  that gains little on its own training instances is limited by how much a round trains.

Each home is measured with the settings its run recorded (``efficacy-run.json``), whatever
this process's FLYWHEEL_* environment. Prints tables and writes <out>/limits.json; with
``--sample 0`` it keeps the capacity rows an earlier limits.json holds for checkpoints the homes
still end with.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # efficacy.py beside it, however this is loaded

from flywheel_assets.resources import TrainingResource  # noqa: E402
from flywheel_assets.settings import default_warehouse_path  # noqa: E402
from flywheel_assets.store import Warehouse  # noqa: E402
from flywheel_assets.store.rows import instances_from_rows, scores_from_rows, trajectories_from_rows  # noqa: E402
from flywheel_assets.world.pipeline import RoundConfig, instance_failure_types  # noqa: E402
from flywheel_assets.world.tasks import TaskInstance  # noqa: E402
from flywheel_training.config import TrainingConfig  # noqa: E402
from flywheel_training.evals.heldout import evaluate  # noqa: E402

from efficacy import FINISHED, recorded_run  # noqa: E402


def warehouse(home: Path) -> Warehouse:
    return Warehouse(default_warehouse_path(home))


def run_settings(home: Path, checkpoint_dir: Path) -> tuple[TrainingConfig, int]:
    """The training settings and turn limit of the run ``home`` holds: the FLYWHEEL_*
    environment and overrides ``efficacy.py`` recorded for it, not this process's (the current
    environment only where the home records no run: its ``FINISHED``)."""
    key = (recorded_run(home) or {"key": {}})["key"]
    environ, overrides = dict(key.get("settings", os.environ)), key.get("overrides", {})
    training = {k: v for k, v in overrides.get("training", {}).items() if k in TrainingConfig.model_fields}
    config = TrainingConfig.from_env(environ, **{**training, "checkpoint_dir": str(checkpoint_dir)})
    max_turns = overrides.get("round_config", {}).get("max_turns") or RoundConfig.from_env(environ).max_turns
    return config, max_turns


def failed_instances(store: Warehouse, round_key: str) -> tuple[set[str], set[str]]:
    """(every instance the round's policy played, those with at least one failed rollout):
    the stage's own definition of a failure (``pipeline.hard_samples``)."""
    rows = store.records("SELECT instance_id, bool_and(success) AS solved FROM rubric_scores "
                         "WHERE round = ? AND role = 'policy' GROUP BY instance_id", [round_key])
    return {r["instance_id"] for r in rows}, {r["instance_id"] for r in rows if not r["solved"]}


def parents(store: Warehouse, round_key: str) -> set[str]:
    return {r["parent_id"] for r in store.records(
        "SELECT DISTINCT parent_id FROM hard_samples WHERE round = ?", [round_key])}


def instance_domains(store: Warehouse, round_key: str) -> dict[str, str]:
    return {r["instance_id"]: r["domain"] for r in store.records(
        "SELECT instance_id, domain FROM task_instances WHERE round = ?", [round_key])}


def last_checkpoint(store: Warehouse) -> dict[str, str] | None:
    """The round and checkpoint_id of the home's last checkpoint (None before any)."""
    rows = store.records("SELECT round, checkpoint_id FROM policy_checkpoints ORDER BY round DESC LIMIT 1")
    return rows[0] if rows else None


def last_round_groups(store: Warehouse) -> tuple[str, dict[str, float]]:
    """The last evaluated round and its held-out pass^1 per group (all, domain:…, phase:…)."""
    rows = store.records("SELECT round, group_name, pass_1 FROM evaluations WHERE subject = 'checkpoint' "
                         "AND round = (SELECT max(round) FROM evaluations WHERE subject = 'checkpoint')")
    return (rows[0]["round"] if rows else ""), {r["group_name"]: r["pass_1"] for r in rows}


def failure_types(store: Warehouse, round_key: str) -> dict[str, str]:
    """Each failed instance's failure type, as the round's hard-samples stage typed it."""
    rollouts = store.read_round("rollouts", round_key)
    policy = next((r["policy"] for r in rollouts if r["role"] == "policy"), "")
    return instance_failure_types(trajectories_from_rows(rollouts),
                                  scores_from_rows(store.read_round("rubric_scores", round_key)), policy)


def share(value: float | None) -> str:
    """A share to two places, or "-" where the stage did not run."""
    return "-" if value is None else f"{value:.2f}"


def tally(values: Iterable[str]) -> dict[str, int]:
    """How often each value occurs, by value: sorted, so limits.json holds the same bytes on every
    run (the values often come from a set of instance ids, whose order is not)."""
    return dict(sorted(Counter(values).items()))


def data_and_signal(store: Warehouse, config: TrainingConfig) -> list[dict[str, Any]]:
    """Per continuation round: failures, the hard-sample parents' failure share, the RFT mix
    and coverage, and GRPO's groups with signal."""
    table = []
    for ck in store.records("SELECT round, data_counts, plan FROM policy_checkpoints WHERE kind != 'sft' "
                            "ORDER BY round"):
        round_key, counts = ck["round"], ck["data_counts"]
        played, failed = failed_instances(store, round_key)
        drawn = parents(store, round_key)
        rft_steps = sum(s["steps"] for s in ck["plan"]["executed"] if s["stage"] == "rft")
        types = failure_types(store, round_key)
        failed_mix, parent_mix = tally(types.values()), tally(types[i] for i in drawn if i in types)
        domain = instance_domains(store, round_key)
        rows = counts.get("rows", 0)
        pool = rows * (1 + config.id_augment)
        draws = min(pool, rft_steps * config.batch_size)
        table.append({
            "round": round_key, "instances": len(played), "failed": len(failed),
            "parents": len(drawn), "parents_failed_share": len(drawn & failed) / len(drawn) if drawn else 0.0,
            "failed_types": failed_mix, "parent_types": parent_mix,
            "prohibited_share": {"failed": prohibited_share(failed_mix), "parents": prohibited_share(parent_mix)},
            "failed_domains": tally(domain[i] for i in failed),
            "parent_domains": tally(domain[i] for i in drawn),
            "rft_rows": rows, "hard_sample_share": counts.get("hard_sample_solutions", 0) / rows if rows else None,
            "rft_distinct_coverage": 1 - (1 - draws / pool) ** (1 + config.id_augment) if pool else None,
            **grpo_signal(counts)})
    return table


def least_aimed_domain(row: dict[str, Any]) -> str:
    """The domain with the fewest hard-sample parents per failed instance, and that ratio."""
    ratios = {d: row["parent_domains"].get(d, 0) / n for d, n in row["failed_domains"].items() if n}
    if not ratios:
        return "-"
    domain = min(ratios, key=lambda d: (ratios[d], d))
    return f"{domain} {ratios[domain]:.2f}"


def prohibited_share(mix: dict[str, int]) -> float:
    return mix.get("prohibited_action", 0) / sum(mix.values()) if mix else 0.0


def grpo_signal(counts: dict[str, Any]) -> dict[str, Any]:
    """GRPO's groups and the share with a reward difference; None where GRPO formed no groups
    (``grpo_steps`` 0, or one rollout per instance: a round's counts then name no groups)."""
    groups = counts.get("grpo_groups", 0)
    return {"grpo_groups": groups,
            "grpo_signal_share": 1 - counts.get("grpo_saturated_groups", 0) / groups if groups else None}


def capacity(training: TrainingResource, store: Warehouse, round_key: str, trained_on: list[TaskInstance],
             trials: int, sample: int, max_turns: int) -> dict[str, Any]:
    """The round's checkpoint on (a sample of) instances it trained on, before its training (the
    checkpoint it started from; not for the built base, which solves nothing) and after, beside
    its held-out pass^1."""
    checkpoint = store.read_round("policy_checkpoints", round_key)[0]
    heldout = store.records("SELECT pass_1, pass_1_low, pass_1_high FROM evaluations WHERE round = ? "
                            "AND group_name = 'all' AND subject = 'checkpoint'", [round_key])[0]
    instances = random.Random(f"limits/{round_key}").sample(trained_on, min(sample, len(trained_on)))

    def pass_1(path: str, checkpoint_id: str) -> tuple[float, list[float]]:
        policy = training.load_policy(Path(path), f"embedded:{checkpoint_id[:12]}",
                                      temperature=training.eval_temperature)
        overall = evaluate(policy, instances, trials=trials, max_turns=max_turns).overall()
        return overall["pass^1"], list(overall["pass^1_ci"])

    after, after_ci = pass_1(checkpoint["path"], checkpoint["checkpoint_id"])
    before, before_ci = (pass_1(checkpoint["base_path"], checkpoint["base_checkpoint"])
                         if checkpoint["base_checkpoint"] else (None, None))
    return {"round": round_key, "checkpoint_id": checkpoint["checkpoint_id"],
            "trained_instances": len(instances), "before_pass_1": before,
            "before_pass_1_ci": before_ci, "after_pass_1": after, "after_pass_1_ci": after_ci,
            "heldout_pass_1": heldout["pass_1"], "heldout_pass_1_ci": [heldout["pass_1_low"], heldout["pass_1_high"]]}


def kept_capacity(out: Path, homes: list[Path]) -> dict[str, dict[str, Any]]:
    """The capacity rows an earlier ``limits.json`` in ``out`` holds for checkpoints the homes
    still end with, so a ``--sample 0`` look keeps the slow measurement instead of dropping it."""
    try:
        earlier = json.loads((out / "limits.json").read_text()).get("capacity", {})
    except (FileNotFoundError, ValueError):
        return {}
    kept = {}
    for home in homes:
        last, row = last_checkpoint(warehouse(home)), earlier.get(home.name)
        if row and last and row.get("checkpoint_id") == last["checkpoint_id"]:
            kept[home.name] = row
    return kept


def arm_pairs(homes: list[Path]) -> list[tuple[Path, Path, str]]:
    """(flywheel home, control home, the control's name without its seed) for each seed and
    each control that ran it beside the flywheel (homes are named by ``efficacy.home_name``)."""
    pairs = []
    for fly in (h for h in homes if h.name.startswith("flywheel-")):
        seed = fly.name.removeprefix("flywheel")  # "-seed<n>": every control's homes of that seed
        for control in (h for h in homes if h.name.startswith("control-") and h.name.endswith(seed)):
            pairs.append((fly, control, control.name.removesuffix(seed)))
    return pairs


def group_differences(homes: list[Path]) -> dict[str, dict[str, Any]]:
    """Per control: flywheel − control held-out pass^1 per group at the last round both
    evaluated, averaged over the seeds both arms ran (a group where an arm fails, e.g. one
    domain, shows what the overall difference hides)."""
    by_control: dict[str, list[dict[str, float]]] = {}
    rounds: dict[str, str] = {}
    for fly, control, name in arm_pairs(homes):
        (fly_round, fly_groups), (ctl_round, ctl_groups) = (last_round_groups(warehouse(fly)),
                                                            last_round_groups(warehouse(control)))
        if not fly_round or fly_round != ctl_round:
            continue
        rounds[name] = fly_round
        by_control.setdefault(name, []).append({g: fly_groups[g] - ctl_groups[g] for g in fly_groups
                                                if g in ctl_groups})
    return {name: {"round": rounds[name], "seeds": len(diffs),
                   "difference": {g: sum(d[g] for d in diffs) / len(diffs) for g in sorted(diffs[0])}}
            for name, diffs in by_control.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".flywheel/efficacy", help="benchmarks/efficacy.py's --out")
    parser.add_argument("--trials", type=int, default=2, help="trials per trained-on instance")
    parser.add_argument("--sample", type=int, default=200,
                        help="trained-on instances per checkpoint (0: skip the capacity measurement)")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    homes = sorted(p for p in out.iterdir() if default_warehouse_path(p).exists())
    if not homes:
        raise SystemExit(f"no run homes in {out}: run benchmarks/efficacy.py --out {args.out} first")
    report: dict[str, Any] = {"data": {}, "capacity": {}, "overlap": {}, "groups": {}}
    settings = {home: run_settings(home, out / "shared") for home in homes}

    print("data and reward signal per continuation round")
    print(f"{'run':>25} {'round':>5} {'failed/played':>13} {'parents failed':>14} {'prohibited failed/parents':>25} "
          f"{'hard-sample rows':>16} {'RFT rows seen':>13} {'GRPO groups w/ signal':>21} "
          f"{'least-aimed domain: parents/failed':>34}")
    for home in homes:
        if home.name.startswith("coldstart"):
            continue
        rows = report["data"][home.name] = data_and_signal(warehouse(home), settings[home][0])
        for r in rows:
            print(f"{home.name:>25} {r['round']:>5} {r['failed']:>6}/{r['instances']:<6} "
                  f"{r['parents_failed_share']:>14.2f} "
                  f"{r['prohibited_share']['failed']:>20.2f}/{r['prohibited_share']['parents']:.2f} "
                  f"{share(r['hard_sample_share']):>16} "
                  f"{share(r['rft_distinct_coverage']):>13} {share(r['grpo_signal_share']):>21} "
                  f"{least_aimed_domain(r):>34}")

    print("\nparents shared by the two arms where they play the same rollouts (r001, same seed)")
    for fly, control, _ in arm_pairs(homes):
        fly_parents, ctl_parents = parents(warehouse(fly), "r001"), parents(warehouse(control), "r001")
        _, failed = failed_instances(warehouse(fly), "r001")
        shared = len(fly_parents & ctl_parents)
        report["overlap"][f"{fly.name}/{control.name}"] = {
            "flywheel": len(fly_parents), "control": len(ctl_parents), "shared": shared,
            "control_failed": len(ctl_parents & failed)}
        print(f"  {fly.name}: flywheel {len(fly_parents)} parents (all failed), {control.name} "
              f"{len(ctl_parents)} ({len(ctl_parents & failed)} failed); {shared} in both")

    print("\nheld-out pass^1 at the last round per group, flywheel - control (mean over the seeds both ran)")
    report["groups"] = group_differences(homes)
    for control, row in report["groups"].items():
        print(f"  {control} ({row['round']}, {row['seeds']} seeds): "
              + ", ".join(f"{group} {diff:+.3f}" for group, diff in row["difference"].items()))

    if args.sample == 0:
        report["capacity"] = kept_capacity(out, homes)
        if report["capacity"]:
            print(f"\ncapacity: not measured (--sample 0); kept the earlier limits.json's rows of "
                  f"{', '.join(report['capacity'])}, whose checkpoints the homes still end with")
    else:
        print(f"\ncapacity: pass^1 ({args.trials} trials, at each run's held-out temperature) on instances the "
              f"checkpoint trained on, against held-out")
        for home in homes:
            config, max_turns = settings[home]
            training = TrainingResource(**config.values())
            store = warehouse(home)
            last = last_checkpoint(store)["round"]
            trained_on = instances_from_rows(store.read_round("task_instances", last))
            trained_on += instances_from_rows(r for r in store.read_round("hard_samples", last) if r["kept"])
            row = report["capacity"][home.name] = capacity(training, store, last, trained_on, args.trials,
                                                            args.sample, max_turns)
            before = (f"{row['before_pass_1']:.3f} [{row['before_pass_1_ci'][0]:.3f}, {row['before_pass_1_ci'][1]:.3f}]"
                      if row["before_pass_1"] is not None else "- (the built base)")
            print(f"  {home.name:>25} {last} on {row['trained_instances']} trained-on instances: before {before}, "
                  f"after {row['after_pass_1']:.3f} [{row['after_pass_1_ci'][0]:.3f}, "
                  f"{row['after_pass_1_ci'][1]:.3f}]; "
                  f"held-out {row['heldout_pass_1']:.3f} [{row['heldout_pass_1_ci'][0]:.3f}, "
                  f"{row['heldout_pass_1_ci'][1]:.3f}]", flush=True)
    (out / "limits.json").write_text(json.dumps(report, indent=2))
    print(f"written: {out / 'limits.json'}")


if __name__ == "__main__":
    main()
