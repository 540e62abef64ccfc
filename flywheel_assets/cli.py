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

from flywheel_assets.cli_domain import add_domain_verbs
from flywheel_assets.cli_eval import add_eval_verb
from flywheel_assets.cli_settings import add_settings_flags, overrides_from, resolve
from flywheel_assets.policies import make_policy
from flywheel_assets.world.settings import SettingsError

console = Console(stderr=True)


def _engine_settings(args: argparse.Namespace):
    """(round settings, policy) of an engine-only verb: its flags over the environment."""
    overrides = overrides_from(args)
    return resolve("round_config", overrides), make_policy(resolve("policy", overrides))


def cmd_rollout(args: argparse.Namespace) -> int:
    """Synthesise instances in every domain, play them with a policy, score and summarise."""
    from flywheel_assets.world.metrics import batch_summary
    from flywheel_assets.world.rollout import run_rollouts
    from flywheel_assets.world.rubric import score
    from flywheel_assets.world.synthesis import seed_instances

    config, policy = _engine_settings(args)
    domains = list(config.domain_names)
    started = time.perf_counter()
    batch = seed_instances(domains, args.per_domain, seed=config.seed, round_key="r000")
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"rollouts ({policy.name})", total=len(batch.instances) * args.samples)
        trajectories = run_rollouts(batch.instances, policy, samples=args.samples, max_turns=config.max_turns,
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
    from flywheel_assets.round_keys import previous_round, round_key
    from flywheel_assets.runner import run_rounds
    from flywheel_training.plan import plan_round

    if args.rounds <= args.from_round:
        _say(f"flywheel run: --rounds {args.rounds} leaves nothing to run from round {args.from_round}")
        return 2
    home = _use_home(args)
    overrides = overrides_from(args)
    try:  # every group, validated before anything runs
        settings = {key: resolve(key, overrides) for key in ("round_config", "policy", "training", "warehouse")}
    except SettingsError as exc:
        _say(f"flywheel run: {exc}")
        return 2
    if settings["policy"].kind.trains:
        for index in range(args.from_round, args.rounds):
            key = round_key(index)
            _say("plan: " + plan_round(key, previous_round=previous_round(key), config=settings["training"]).describe())
    outcomes = run_rounds(home, args.rounds, first=args.from_round, report=_say, overrides=overrides,
                          cascade=getattr(args, "cascade", False))
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
    phases = ("linear", "branched", "adversarial", "augmented")
    by_phase = {p: {r["round"]: r for r in heldout_rows(store, f"phase:{p}")} for p in phases}
    table = Table(title="held-out Mock World evaluation, per round (phase columns: pass^1)")
    for column in ("round", "checkpoint", "tasks", "pass^1", "95% CI", f"pass^{rows[0]['k']}", "greedy",
                   "mean reward", *phases):
        table.add_column(column, justify="right")
    for r in rows:
        cells = [f"{by_phase[p][r['round']]['pass_1']:.3f}" if r["round"] in by_phase[p] else "" for p in phases]
        interval = f"{r['pass_1_low']:.3f}–{r['pass_1_high']:.3f}" if r["pass_1_low"] is not None else ""
        greedy = (f"{r['greedy_pass_1']:.3f} ({r['greedy_pass_1_low']:.3f}–{r['greedy_pass_1_high']:.3f})"
                  if r["greedy_pass_1"] is not None else "")
        table.add_row(r["round"], r["kind"], str(r["tasks"]), f"{r['pass_1']:.3f}", interval, f"{r['pass_k']:.3f}",
                      greedy, f"{r['reward_mean']:.3f}", *cells)
    Console(width=140).print(table)
    _say(f"plot: {plot_heldout(rows, state_dir(home) / 'heldout.png')}")


def cmd_ui(args: argparse.Namespace) -> int:
    """Replace this process with `dagster dev` (webserver + daemon) on the home's instance."""
    from flywheel_assets.runner import INSTANCE_CONFIG, use_home

    instance_dir = use_home(_use_home(args))
    from flywheel_assets.runner import fail_orphaned_runs_of

    # a killed `flywheel run` left its run STARTED: fail it, or UI-launched rounds queue behind it
    fail_orphaned_runs_of(Path(os.environ["FLYWHEEL_HOME"]), _say)
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
    from flywheel_assets.terminal import safe_text, strict_json

    if as_json:
        print(strict_json(rows))
        return
    if not rows:
        _say("(no rows)")
        return
    table = Table(show_lines=False)
    for column in rows[0]:
        table.add_column(safe_text(column), overflow="fold")
    for row in rows:
        # model text may hold terminal escapes, NUL or bidi overrides: shown as escapes
        cells = [safe_text(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str))
                 for v in row.values()]
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
        from flywheel_assets.terminal import safe_text

        _say(f"flywheel sql: {safe_text(str(exc), keep_newlines=True)}")
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
        from flywheel_assets.store.lineage import describe_rootless

        found, message = describe_rootless(_warehouse(args), args.id)
        _say(message)
        return 0 if found else 1
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
        from flywheel_assets.store.export import write_jsonl_file

        try:
            write_jsonl_file(records, Path(args.out))
        except WarehouseError as exc:
            _say(f"flywheel export: {exc}")
            return 2
        _say(f"wrote {len(records)} episodes of round {args.round} to {args.out}")
        return 0
    try:
        write_jsonl(records, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left (`| head`): say so once, without a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        _say("flywheel export: the output was closed before the export finished")
        return 1
    return 0


def cmd_expansion(args: argparse.Namespace) -> int:
    """Per-domain summary of one round's seed expansion and hard-sample augmentation."""
    from flywheel_assets.world.expansion_report import expansion_summary

    config, policy = _engine_settings(args)
    config = config.replace(rollouts_per_instance=1)
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


def cmd_settings(args: argparse.Namespace) -> int:
    """Every setting: its default, variable, flag and (unless --markdown) the value in effect here."""
    from flywheel_assets.settings import GROUPS, settings_markdown

    if args.markdown:
        print(settings_markdown())
        return 0
    try:
        current = {key: group.from_env().values() for key, group in GROUPS.items()}
    except SettingsError as exc:
        _say(f"flywheel settings: {exc}")
        return 2
    rows = [{"setting": f"{key}.{spec.name}", "value": current[key][spec.name], "default": spec.default,
             "environment": spec.env, "flag": spec.flag or ""} for key, group in GROUPS.items() for spec in group.specs()]
    _print_rows(rows, args.json, 60)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flywheel", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    engine_only = {"skip": ["round_config.eval_per_domain", "round_config.eval_seed", "round_config.max_rounds",
                            "round_config.max_carried", "round_config.hard_sample_parents",
                            "round_config.hard_sample_share", "round_config.hard_sample_pick"]}
    rollout = verbs.add_parser("rollout", help="synthesise Mock World instances and run a scored rollout batch")
    rollout.add_argument("--per-domain", type=int, default=50, help="seed instances per domain (default: 50)")
    rollout.add_argument("--samples", type=int, default=1, help="rollouts per instance (default: 1)")
    rollout.add_argument("--out", help="write scored trajectories as JSONL here")
    add_settings_flags(rollout, ["round_config", "policy"], defaults={"policy.name": "teacher"},
                       skip=engine_only["skip"] + ["round_config.tasks_per_domain", "round_config.rollouts_per_instance",
                                                   "round_config.backtranslated_per_tree",
                                                   "round_config.adversarial_share", "round_config.augment_per_failure"])
    rollout.set_defaults(func=cmd_rollout)

    expansion = verbs.add_parser("expansion", help="summarise behaviour-tree expansion, back-translation, "
                                                   "adversarial share and the consistency filter, per domain")
    expansion.add_argument("--json", action="store_true")
    add_settings_flags(expansion, ["round_config", "policy"], defaults={"policy.name": "flaky-teacher"},
                       skip=engine_only["skip"] + ["round_config.rollouts_per_instance"])
    expansion.set_defaults(func=cmd_expansion)

    settings = verbs.add_parser("settings", help="every setting: default, FLYWHEEL_* variable, flag, current value")
    settings.add_argument("--markdown", action="store_true", help="the README's settings table")
    settings.add_argument("--json", action="store_true", help="one JSON array of row objects")
    settings.set_defaults(func=cmd_settings)

    home = argparse.ArgumentParser(add_help=False)
    home.add_argument("--home", help="where .flywheel/ (warehouse, Dagster instance) lives "
                                     "(default: $FLYWHEEL_HOME, else the current directory)")
    run = verbs.add_parser("run", parents=[home], help="materialise flywheel rounds in order into the Dagster instance",
                           description="Every settings flag overrides only the setting it names; the rest come "
                                       "from FLYWHEEL_* variables, else the defaults (`flywheel settings`).")
    run.add_argument("--rounds", type=int, required=True, help="materialise rounds r000 … r(N-1)")
    run.add_argument("--from-round", type=int, default=0, help="start at this round (its predecessor must exist)")
    run.add_argument("--cascade", action="store_true",
                     help="let a rerun that changes a round clear what later rounds built from it (without it, "
                          "such a rerun is refused, naming those rounds)")
    add_settings_flags(run)
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
    add_eval_verb(verbs, home)
    add_domain_verbs(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SettingsError as exc:  # an invalid setting is the user's to fix: one line, no traceback
        _say(f"flywheel {args.verb}: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
