"""The ``flywheel`` command."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from flywheel_assets.world.domains import DOMAINS

console = Console(stderr=True)


def _policy(name: str, seed: int):
    from flywheel_training.policies.baselines import DoNothingPolicy, RandomPolicy
    from flywheel_training.policies.scripted import ScriptedTeacher

    policies = {"teacher": ScriptedTeacher, "teacher-jit": lambda: ScriptedTeacher("just_in_time"),
                "random": lambda: RandomPolicy(seed), "do-nothing": DoNothingPolicy}
    return policies[name]()


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
