"""Environment steps per second with the scripted teacher, and the consistency-cache hit rate.

A step is one assistant message applied to the environment (tool calls executed through
the cache, or a mock-user reply). Prints figures measured in this one run; the ratio line
compares the same batch played with one rollout per instance against several, which is
where the task-level cache earns its hits.

    python benchmarks/env_steps.py [--per-domain 250] [--samples 4]
"""

from __future__ import annotations

import argparse
import time

from flywheel_assets.world.domains import DOMAINS
from flywheel_assets.world.metrics import batch_summary
from flywheel_assets.world.rollout import run_rollouts
from flywheel_assets.world.rubric import score
from flywheel_assets.world.synthesis import seed_instances
from flywheel_assets.world.teacher import ScriptedTeacher


def measure(instances, samples: int) -> tuple[float, dict]:
    started = time.perf_counter()
    trajectories = run_rollouts(instances, ScriptedTeacher(), samples=samples)
    elapsed = time.perf_counter() - started
    by_id = {i.instance_id: i for i in instances}
    summary = batch_summary(trajectories, [score(by_id[t.instance_id], t) for t in trajectories])
    return summary["turns"] / elapsed, summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-domain", type=int, default=250)
    parser.add_argument("--samples", type=int, default=4)
    args = parser.parse_args()
    started = time.perf_counter()
    batch = seed_instances(sorted(DOMAINS), args.per_domain, seed=0, round_key="r000")
    synth = time.perf_counter() - started
    print(f"synthesis: {len(batch.instances)} instances in {synth:.2f}s ({len(batch.instances) / synth:.0f}/s)")
    single_rate, single = measure(batch.instances, 1)
    multi_rate, multi = measure(batch.instances, args.samples)
    for label, rate, summary in (("1 rollout/instance", single_rate, single),
                                 (f"{args.samples} rollouts/instance", multi_rate, multi)):
        print(f"{label}: {summary['episodes']} episodes, {summary['turns']} steps, {rate:,.0f} steps/s, "
              f"{summary['tool_calls']} tool calls, cache hit rate {summary['cache_hit_rate']:.3f}, "
              f"pass rate {summary['pass_rate']:.3f}")
    print(f"ratio steps/s ({args.samples} samples vs 1): {multi_rate / single_rate:.2f}x")


if __name__ == "__main__":
    main()
