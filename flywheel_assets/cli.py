"""The ``flywheel`` command."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from flywheel_assets.world.domains import DOMAINS

console = Console(stderr=True)


def _policy(name: str, seed: int, fail_share: float = 0.5):
    from flywheel_assets.resources import make_policy

    return make_policy(name, seed=seed, fail_share=fail_share)


def cmd_rollout(args: argparse.Namespace) -> int:
    """Synthesise instances in every domain, play them with a policy, score and summarise."""
    from flywheel_assets.world.metrics import batch_summary
    from flywheel_assets.world.rollout import run_rollouts
    from flywheel_assets.world.rubric import score
    from flywheel_assets.world.synthesis import seed_instances

    domains = args.domains.split(",") if args.domains else sorted(DOMAINS)
    started = time.perf_counter()
    batch = seed_instances(domains, args.per_domain, seed=args.seed, round_key="r000")
    policy = _policy(args.policy, args.seed)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"rollouts ({policy.name})", total=len(batch.instances) * args.samples)
        trajectories = run_rollouts(batch.instances, policy, samples=args.samples, max_turns=args.max_turns,
                                    progress=lambda done, total: bar.update(task, completed=done))
    by_id = {i.instance_id: i for i in batch.instances}
    scores = [score(by_id[t.instance_id], t) for t in trajectories]
    table = Table(title=f"{policy.name}: {len(trajectories)} episodes in {time.perf_counter() - started:.1f}s")
    for column in ("domain", "episodes", "pass rate", "reward mean", "cache hit rate", "tool errors"):
        table.add_column(column, justify="right")
    for name in domains + ["all"]:
        pairs = [(t, s) for t, s in zip(trajectories, scores) if name == "all" or by_id[t.instance_id].domain == name]
        summary = batch_summary([p[0] for p in pairs], [p[1] for p in pairs])
        table.add_row(name, str(summary["episodes"]), f"{summary['pass_rate']:.3f}", f"{summary['reward_mean']:.3f}",
                      f"{summary['cache_hit_rate']:.3f}", str(summary["tool_errors"]))
    Console().print(table)
    if args.out:
        with Path(args.out).open("w") as f:
            for t, s in zip(trajectories, scores):
                f.write(json.dumps({"trajectory": t.to_dict(), "score": s.to_dict()}) + "\n")
        console.print(f"wrote {len(trajectories)} scored trajectories to {args.out}")
    return 0


def _say(text: str) -> None:
    """A plain line on stderr: no markup (ids, SQL and errors contain brackets), no wrapping."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _use_home(args: argparse.Namespace) -> Path:
    """--home DIR, else $FLYWHEEL_HOME, else the current directory; exported for the run."""
    from flywheel_assets.resources import flywheel_home

    home = Path(args.home).resolve() if args.home else flywheel_home()
    os.environ["FLYWHEEL_HOME"] = str(home)
    return home


def _warehouse(args: argparse.Namespace):
    from flywheel_assets.resources import warehouse_path
    from flywheel_assets.store import Warehouse

    _use_home(args)
    return Warehouse(warehouse_path())


def cmd_run(args: argparse.Namespace) -> int:
    """Materialise rounds in order into the home's persistent Dagster instance."""
    from flywheel_assets.runner import run_rounds

    if args.rounds <= args.from_round:
        _say(f"flywheel run: --rounds {args.rounds} leaves nothing to run from round {args.from_round}")
        return 2
    home = _use_home(args)
    outcomes = run_rounds(home, args.rounds, first=args.from_round, report=_say,
                          policy=args.policy, fail_share=args.fail_share, seed=args.seed, domains=args.domains,
                          tasks_per_domain=args.tasks_per_domain, rollouts_per_instance=args.rollouts_per_instance,
                          max_turns=args.max_turns)
    ok = bool(outcomes) and all(o.success for o in outcomes) and len(outcomes) == args.rounds - args.from_round
    if ok:
        _say(f"{len(outcomes)} rounds materialised; see them with `flywheel ui --home {home}`")
        _print_heldout(home)
    return 0 if ok else 1


def _print_heldout(home: Path) -> None:
    from flywheel_assets.heldout_report import heldout_rows, plot_heldout
    from flywheel_assets.resources import state_dir

    store = _warehouse(argparse.Namespace(home=str(home)))
    rows = heldout_rows(store)
    if not rows:
        return
    phases = ("linear", "branched", "adversarial")
    by_phase = {p: {r["round"]: r for r in heldout_rows(store, f"phase:{p}")} for p in phases}
    table = Table(title="held-out Mock World evaluation, per round (phase columns: pass^1)")
    for column in ("round", "checkpoint", "tasks", "pass^1", f"pass^{rows[0]['k']}", "mean reward", *phases):
        table.add_column(column, justify="right")
    for r in rows:
        cells = [f"{by_phase[p][r['round']]['pass_1']:.3f}" if r["round"] in by_phase[p] else "" for p in phases]
        table.add_row(r["round"], r["kind"], str(r["tasks"]), f"{r['pass_1']:.3f}", f"{r['pass_k']:.3f}",
                      f"{r['reward_mean']:.3f}", *cells)
    Console(width=120).print(table)
    _say(f"plot: {plot_heldout(rows, state_dir(home) / 'heldout.png')}")


def cmd_ui(args: argparse.Namespace) -> int:
    """Replace this process with `dagster dev` (webserver + daemon) on the home's instance."""
    from flywheel_assets.runner import INSTANCE_CONFIG, use_home

    instance_dir = use_home(_use_home(args))
    workspace = INSTANCE_CONFIG.with_name("workspace.yaml")
    # `python -m` puts the working directory first on sys.path: start in the instance
    # directory, so a stray module in the user's directory cannot shadow one Dagster imports.
    os.chdir(instance_dir)
    command = [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "-h", args.host, "-p", str(args.port)]
    _say(f"Dagster UI on http://{args.host}:{args.port} (DAGSTER_HOME={os.environ['DAGSTER_HOME']})")
    # A shell starts background jobs with SIGINT ignored, and exec keeps ignored signals
    # ignored: dagster dev would then not stop on Ctrl-C or `kill -INT`.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.execv(sys.executable, command)
    return 1  # not reached


def _print_rows(rows: list[dict], as_json: bool, max_width: int) -> None:
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, default=str))
        return
    if not rows:
        _say("(no rows)")
        return
    table = Table(show_lines=False)
    for column in rows[0]:
        table.add_column(column, overflow="fold")
    for row in rows:
        cells = [v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str) for v in row.values()]
        # Text, not markup: values hold brackets (JSON, ids) that rich would read as styles
        table.add_row(*(Text(c if len(c) <= max_width else c[: max_width - 1] + "…") for c in cells))
    Console(width=max(Console().width, 160)).print(table)
    _say(f"{len(rows)} rows")


def cmd_sql(args: argparse.Namespace) -> int:
    """Run SQL on a read-only connection to the warehouse."""
    import duckdb

    from flywheel_assets.store import WarehouseError

    try:
        rows = _warehouse(args).records(args.query)
    except (duckdb.Error, WarehouseError) as exc:
        _say(f"flywheel sql: {exc}")
        return 2
    _print_rows(rows, args.json, args.max_width)
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    """Trace an id back to its seed task with the shipped recursive query."""
    from flywheel_assets.store import WarehouseError, trace_lineage

    try:
        frame = trace_lineage(_warehouse(args), args.id)
    except WarehouseError as exc:
        _say(f"flywheel lineage: {exc}")
        return 2
    if frame.height == 0:
        _say(f"no parents recorded for {args.id}: it is a seed task, or no such id is in the warehouse")
        return 1
    _print_rows(frame.to_dicts(), args.json, args.max_width)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write a round's scored rollouts as OpenAI-messages JSONL."""
    from flywheel_assets.store import WarehouseError
    from flywheel_assets.store.export import export_records, write_jsonl

    try:
        records = export_records(_warehouse(args), args.round, successful_only=args.successful_only)
    except WarehouseError as exc:
        _say(f"flywheel export: {exc}")
        return 2
    if args.out:
        with Path(args.out).open("w") as out:
            write_jsonl(records, out)
        _say(f"wrote {len(records)} episodes of round {args.round} to {args.out}")
    else:
        write_jsonl(records, sys.stdout)
    return 0


def cmd_expansion(args: argparse.Namespace) -> int:
    """Per-domain summary of one round's seed expansion and hard-sample augmentation."""
    from flywheel_assets.world.expansion_report import expansion_summary
    from flywheel_assets.world.pipeline import RoundConfig

    config = RoundConfig(seed=args.seed, tasks_per_domain=args.tasks_per_domain,
                         backtranslated_per_tree=args.backtranslated_per_tree,
                         adversarial_share=args.adversarial_share, rollouts_per_instance=1,
                         domains=tuple(args.domains.split(",")) if args.domains else RoundConfig().domains)
    policy = _policy(args.policy, args.seed, args.fail_share)
    rows = expansion_summary(config, policy)
    if args.json:
        print(json.dumps(rows))
        return 0
    table = Table(title=f"seed expansion and augmentation of {policy.name}'s failures")
    for column in rows[0]:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()))
    Console(width=170).print(table)  # thirteen columns: never fold them into ellipses
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flywheel", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    rollout = verbs.add_parser("rollout", help="synthesise Mock World instances and run a scored rollout batch")
    rollout.add_argument("--domains", default="", help="comma-separated domain names (default: all)")
    rollout.add_argument("--per-domain", type=int, default=50)
    rollout.add_argument("--samples", type=int, default=1, help="rollouts per instance")
    rollout.add_argument("--policy", default="teacher", choices=["teacher", "teacher-jit", "random", "do-nothing"])
    rollout.add_argument("--max-turns", type=int, default=30)
    rollout.add_argument("--seed", type=int, default=0)
    rollout.add_argument("--out", help="write scored trajectories as JSONL here")
    rollout.set_defaults(func=cmd_rollout)

    expansion = verbs.add_parser("expansion", help="summarise behaviour-tree expansion, back-translation, "
                                                   "adversarial share and the consistency filter, per domain")
    expansion.add_argument("--tasks-per-domain", type=int, default=25)
    expansion.add_argument("--backtranslated-per-tree", type=int, default=3)
    expansion.add_argument("--adversarial-share", type=float, default=0.3)
    expansion.add_argument("--policy", default="flaky-teacher",
                           choices=["teacher", "teacher-jit", "random", "do-nothing", "flaky-teacher"])
    expansion.add_argument("--fail-share", type=float, default=0.4)
    expansion.add_argument("--domains", default="")
    expansion.add_argument("--seed", type=int, default=0)
    expansion.add_argument("--json", action="store_true")
    expansion.set_defaults(func=cmd_expansion)

    home = argparse.ArgumentParser(add_help=False)
    home.add_argument("--home", help="where .flywheel/ (warehouse, Dagster instance) lives "
                                     "(default: $FLYWHEEL_HOME, else the current directory)")
    run = verbs.add_parser("run", parents=[home], help="materialise flywheel rounds in order into the Dagster instance")
    run.add_argument("--rounds", type=int, required=True, help="materialise rounds r000 … r(N-1)")
    run.add_argument("--from-round", type=int, default=0, help="start at this round (its predecessor must exist)")
    run.add_argument("--policy", choices=["teacher", "teacher-jit", "random", "do-nothing", "flaky-teacher", "openai"])
    run.add_argument("--fail-share", type=float, help="flaky-teacher: share of episodes it fails on purpose")
    run.add_argument("--tasks-per-domain", type=int)
    run.add_argument("--rollouts-per-instance", type=int)
    run.add_argument("--max-turns", type=int)
    run.add_argument("--domains", help="comma-separated domain packs (default: all)")
    run.add_argument("--seed", type=int)
    run.set_defaults(func=cmd_run)
    ui = verbs.add_parser("ui", parents=[home], help="the Dagster UI and daemon (dagster dev) on the home's instance")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)
    output = argparse.ArgumentParser(add_help=False, parents=[home])
    output.add_argument("--json", action="store_true", help="one JSON array of row objects")
    output.add_argument("--max-width", type=int, default=60, help="cut table cells to this many characters")
    sql = verbs.add_parser("sql", parents=[output], help="run read-only SQL on the warehouse")
    sql.add_argument("query")
    sql.set_defaults(func=cmd_sql)
    lineage = verbs.add_parser("lineage", parents=[output], help="trace an id back to its seed task")
    lineage.add_argument("id")
    lineage.set_defaults(func=cmd_lineage)
    export = verbs.add_parser("export", parents=[home], help="a round's scored rollouts as OpenAI-messages JSONL")
    export.add_argument("--round", required=True)
    export.add_argument("--format", choices=["jsonl"], default="jsonl")
    export.add_argument("--successful-only", action="store_true", help="only episodes that passed their rubric")
    export.add_argument("--out", help="file to write (default: stdout)")
    export.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
