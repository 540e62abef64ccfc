"""Batched vs one-episode-at-a-time generation, and the prefix cache, with the embedded model.

Plays the same held-out episodes three times with the same model, greedy: one episode at a
time, then every live episode batched into ``generate`` calls of ``--batch``, both
recomputing every turn's whole prompt, then batched with the prefix cache (each turn reuses
the keys and values its episode's last turn computed). Greedy output depends on neither, so
the runs generate the same tokens; the ratios are pure serving throughput.

    python benchmarks/generation_batching.py [--model PATH] [--episodes 32] [--max-turns 6]

Without ``--model`` it builds the untrained base, whose output runs to the token limit (the
worst case for one turn's generation) but whose episodes end after a turn or two, so the
prefix cache has little to reuse: pass a trained checkpoint (``.flywheel/checkpoints/r002``
after the README's main job) to measure multi-turn play. Prints figures measured in this run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from flywheel_assets.world.domains import DOMAINS  # noqa: E402
from flywheel_assets.world.rollout import run_rollouts  # noqa: E402
from flywheel_assets.world.synthesis import seed_instances  # noqa: E402
from flywheel_training.policies.local import GenerationSettings, LocalTransformersPolicy  # noqa: E402
from flywheel_training.tiny import TinyConfig, build_tiny  # noqa: E402


def play(model: str, instances, batch: int, max_turns: int, max_new_tokens: int,
         prefix_cache: bool) -> tuple[float, int, list]:
    policy = LocalTransformersPolicy(model, settings=GenerationSettings(
        max_new_tokens=max_new_tokens, max_batch_size=batch, prefix_cache=prefix_cache))
    started = time.perf_counter()
    trajectories = run_rollouts(instances, policy, max_turns=max_turns)
    return time.perf_counter() - started, policy.generated_tokens, [t.messages for t in trajectories]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="model folder (default: build the untrained embedded base)")
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32, help="batch size of the batched run")
    parser.add_argument("--max-turns", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=80)
    args = parser.parse_args()
    # the architecture without its pretraining: throughput is the same, and an untrained model
    # writes to the token limit (the worst case for generation time)
    model = args.model or str(build_tiny(tempfile.mkdtemp(prefix="flywheel-bench-") + "/base",
                                         TinyConfig(induction_steps=0, recall_steps=0)))
    per_domain = -(-args.episodes // len(DOMAINS))
    instances = seed_instances(sorted(DOMAINS), per_domain, seed=900_001, round_key="eval").instances[:args.episodes]
    single_s, single_tokens, single_out = play(model, instances, 1, args.max_turns, args.max_new_tokens, False)
    batched_s, batched_tokens, batched_out = play(model, instances, args.batch, args.max_turns, args.max_new_tokens, False)
    cached_s, cached_tokens, cached_out = play(model, instances, args.batch, args.max_turns, args.max_new_tokens, True)
    print(f"episodes={len(instances)} max_turns={args.max_turns} max_new_tokens={args.max_new_tokens}")
    print(f"one at a time: {single_tokens} tokens in {single_s:.1f}s = {single_tokens / single_s:.0f} tokens/s")
    print(f"batched ({args.batch}): {batched_tokens} tokens in {batched_s:.1f}s = {batched_tokens / batched_s:.0f} tokens/s")
    print(f"batched ({args.batch}) + prefix cache: {cached_tokens} tokens in {cached_s:.1f}s "
          f"= {cached_tokens / cached_s:.0f} tokens/s")
    print(f"identical episodes: batched {sum(a == b for a, b in zip(single_out, batched_out))}/{len(instances)}, "
          f"prefix cache {sum(a == b for a, b in zip(batched_out, cached_out))}/{len(instances)}")
    print(f"batched/one-at-a-time throughput ratio: {(batched_tokens / batched_s) / (single_tokens / single_s):.2f}x")
    print(f"prefix cache/batched throughput ratio: {(cached_tokens / cached_s) / (batched_tokens / batched_s):.2f}x")

if __name__ == "__main__":
    main()
