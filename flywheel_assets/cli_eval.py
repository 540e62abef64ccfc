"""``flywheel eval bfcl|tau2``: a round's checkpoint, a model folder or an OpenAI-compatible
endpoint on BFCL-v4 multi-turn or τ²-bench; ``--gold`` replays the ground truth through the
harness beside the benchmark's own replay (the harness's test)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from flywheel_assets.cli_settings import add_settings_flags, overrides_from, resolve
from flywheel_assets.external_eval import BENCHMARKS, BFCL_CATEGORIES, TAU2_DOMAINS
from flywheel_assets.world.settings import split_list

console = Console(stderr=True)


def add_eval_verb(verbs: Any, home: argparse.ArgumentParser) -> None:
    ev = verbs.add_parser("eval", parents=[home], help="a checkpoint or endpoint on BFCL-v4 multi-turn or τ²-bench")
    ev.add_argument("benchmark", choices=BENCHMARKS)
    source = ev.add_mutually_exclusive_group()
    source.add_argument("--round", help="this round's checkpoint (from the home's warehouse)")
    source.add_argument("--checkpoint", help="a model folder")
    ev.add_argument("--category", help=f"BFCL categories, comma-separated (default: all: {', '.join(BFCL_CATEGORIES)})")
    ev.add_argument("--domain", help=f"τ² domains, comma-separated (default: retail; {', '.join(TAU2_DOMAINS)})")
    ev.add_argument("--limit", type=int, help="entries per category / tasks per domain (default: all)")
    ev.add_argument("--trials", type=int, default=1, help="trials per entry: pass^k for k up to this (default: 1)")
    ev.add_argument("--gold", action="store_true", help="replay the ground truth through the harness and beside "
                                                        "the benchmark's own replay: valid/total and times")
    ev.add_argument("--json", action="store_true", help="one JSON array of result rows")
    add_settings_flags(ev, ["policy", "world"], skip=["world.world", "world.llm_roles", "world.llm_cache"])
    ev.set_defaults(func=cmd_eval)


def _say(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def cmd_eval(args: argparse.Namespace) -> int:
    from flywheel_assets.external_eval import result_rows

    categories = split_list(args.category) if args.category else list(BFCL_CATEGORIES)
    domains = split_list(args.domain) if args.domain else ["retail"]
    unknown = [c for c in categories if c not in BFCL_CATEGORIES] + [d for d in domains if d not in TAU2_DOMAINS]
    if unknown:
        _say(f"flywheel eval: unknown {', '.join(unknown)}; categories: {', '.join(BFCL_CATEGORIES)}; "
             f"domains: {', '.join(TAU2_DOMAINS)}")
        return 2
    if args.gold:
        return _gold(args.benchmark, categories, domains, args.limit, args.json)
    from flywheel_training.evals.run import run_benchmarks, user_endpoint

    overrides = overrides_from(args)
    try:
        policy, sha = _policy(args, overrides)
    except ValueError as exc:
        _say(f"flywheel eval: {exc}")
        return 2
    world = resolve("world", overrides)
    endpoint = user_endpoint(world.endpoint("user", required=False), world.llm_api_key_env)
    try:
        results = run_benchmarks(policy, [args.benchmark], bfcl_categories=categories, tau2_domains=domains,
                                 limit=args.limit, trials=args.trials, user_endpoint=endpoint, report=_say)
    except ValueError as exc:
        _say(f"flywheel eval: {exc}")
        return 2
    rows = result_rows(results, sha)
    if args.json:
        print(json.dumps(rows))
        return 0
    table = Table(title=f"{args.benchmark}: {policy.name}")
    for column in ("category", "split", "metric", "k", "value", "entries", "trials", "user simulator"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(r["category"], r["split"], r["metric"], str(r["k"]), f"{r['value']:.3f}", str(r["entries"]),
                      str(r["trials"]), r["user_model"])
    Console(width=140).print(table)
    return 0


def _policy(args: argparse.Namespace, overrides: dict) -> tuple[Any, str | None]:
    """(policy, checkpoint sha256 or None) for --round, --checkpoint or the policy settings."""
    from flywheel_assets.policies import make_policy

    if not (args.round or args.checkpoint):
        settings = resolve("policy", overrides)
        if settings.name != "openai":
            raise ValueError("flywheel eval plays a model: give --round rNNN, --checkpoint PATH or --policy openai "
                             "(the scripted policies read Mock World tasks, not benchmark entries)")
        return make_policy(settings), None
    from flywheel_training.checkpoints import folder_sha256
    from flywheel_training.config import TrainingConfig
    from flywheel_training.policies.local import GenerationSettings, LocalTransformersPolicy

    path = Path(args.checkpoint).resolve() if args.checkpoint else _round_checkpoint(args)
    sha = folder_sha256(path)
    training = TrainingConfig.from_env()
    # one trial: greedy (the benchmark's answer); several: sampled, so pass^k means something
    settings = GenerationSettings(max_new_tokens=training.max_new_tokens, seed=training.model_seed,
                                  temperature=0.0 if args.trials == 1 else training.eval_temperature)
    return LocalTransformersPolicy(path, name=f"embedded:{sha[:12]}", settings=settings), sha


def _round_checkpoint(args: argparse.Namespace) -> Path:
    import os

    from flywheel_assets.settings import flywheel_home, warehouse_path
    from flywheel_assets.store import Warehouse

    if args.home:
        os.environ["FLYWHEEL_HOME"] = str(Path(args.home).resolve())
    store = Warehouse(warehouse_path())
    rows = store.read_round("policy_checkpoints", args.round)
    if not rows:
        raise SystemExit(f"flywheel eval: round {args.round} has no checkpoint in {flywheel_home()}")
    return Path(rows[0]["path"])


def _gold(benchmark: str, categories: list[str], domains: list[str], limit: int | None, as_json: bool) -> int:
    from flywheel_training.evals import bfcl, tau2_gold

    if benchmark == "bfcl":
        comparisons = bfcl.compare_gold(categories, limit=limit)
    else:
        comparisons = [tau2_gold.compare_gold(d, limit=limit) for d in domains]
    rows = [{"benchmark": c.benchmark, "category": c.category, "valid": c.valid, "total": c.total,
             "seconds": round(c.seconds, 2), "reference_valid": c.reference_valid,
             "reference_seconds": round(c.reference_seconds, 2), "ratio": round(c.ratio, 2)} for c in comparisons]
    if as_json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(f"{r['benchmark']} {r['category']}: harness {r['valid']}/{r['total']} valid in {r['seconds']}s; "
                  f"the benchmark's own replay {r['reference_valid']}/{r['total']} in {r['reference_seconds']}s "
                  f"(ratio {r['ratio']})")
    return 0 if all(r["valid"] == r["total"] for r in rows) else 1
