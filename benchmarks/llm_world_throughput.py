"""LLM-world round throughput: episodes per second with the tool and user phases batched
across episodes versus one call at a time, against the scripted OpenAI-compatible server
with an artificial latency per call (the scripted teacher plays, so only the world roles
cost endpoint time). No call cache, so every call reaches the server. The server runs in a
child process, as a real endpoint would: its own work does not compete with the rollout
for this process's interpreter lock.

    python benchmarks/llm_world_throughput.py [--episodes 32] [--latency-ms 200]

Target: at least 10x at 32 episodes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.llm_server import ScriptedServer, world_responder  # noqa: E402

from flywheel_assets.world.llm.client import EndpointConfig  # noqa: E402
from flywheel_assets.world.llm.roles import build_world_roles  # noqa: E402
from flywheel_assets.world.rollout import run_rollouts  # noqa: E402
from flywheel_assets.world.rubric import score  # noqa: E402
from flywheel_assets.world.synthesis import seed_instances  # noqa: E402
from flywheel_assets.world.teacher import ScriptedTeacher  # noqa: E402


def play(instances, url: str, concurrency: int) -> tuple[float, int, float]:
    """(seconds, endpoint calls, pass rate) for one round of the instances."""
    configs = {role: EndpointConfig(role=role, base_url=url, model="scripted", max_retries=0, timeout=30.0,
                                    concurrency=concurrency) for role in ("user", "tool")}
    world = build_world_roles(configs, cache=None, round_key="bench", stage="rollouts")
    started = time.perf_counter()
    trajectories = run_rollouts(instances, ScriptedTeacher(), max_turns=14, user_factory=world.user_factory,
                                backend_for=world.backend_for, concurrency=concurrency)
    elapsed = time.perf_counter() - started
    passed = sum(score(i, t).success for i, t in zip(instances, trajectories)) / len(trajectories)
    return elapsed, len(world.call_rows()), passed


def _serve(latency_s: float, urls: "multiprocessing.Queue[str]") -> None:
    server = ScriptedServer(world_responder(), latency_s=latency_s)
    urls.put(server.url)
    signal.sigwait({signal.SIGTERM})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    args = parser.parse_args()
    instances = seed_instances(["retail", "telecom"], (args.episodes + 1) // 2, seed=0, round_key="r000").instances
    instances = instances[:args.episodes]
    urls: multiprocessing.Queue[str] = multiprocessing.Queue()
    child = multiprocessing.get_context("fork").Process(target=_serve, args=(args.latency_ms / 1000, urls),
                                                         daemon=True)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # the child inherits the mask and waits for it
    child.start()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    try:
        url = urls.get(timeout=60)
        results = {}
        for label, concurrency in (("batched", args.episodes), ("one call at a time", 1)):
            elapsed, calls, passed = play(instances, url, concurrency)
            results[label] = len(instances) / elapsed
            print(f"{label}: {len(instances)} episodes, {calls} endpoint calls in {elapsed:.1f}s "
                  f"({results[label]:.2f} episodes/s; pass rate {passed:.2f})")
    finally:
        os.kill(child.pid, signal.SIGTERM)  # stopped by its own pid
        child.join(timeout=10)
    print(f"ratio episodes/s (batched vs one call at a time, {args.episodes} episodes, "
          f"{args.latency_ms:.0f} ms per call): {results['batched'] / results['one call at a time']:.1f}x")


if __name__ == "__main__":
    main()
