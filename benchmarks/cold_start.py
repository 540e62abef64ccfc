"""Cold-start efficacy of the embedded model: build the base, SFT it on the teacher's
trajectories of one round's KEPT instances, and compare held-out pass^1 and mean rubric
reward of the untrained base and the fine-tuned checkpoint.

    python benchmarks/cold_start.py [--out .flywheel/cold_start] [--steps 1200] [--eval-per-domain 10]

Prints the figures measured in this run (training time, tokens/s, pass^1 before/after).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from flywheel_assets.world.domains import DOMAINS  # noqa: E402
from flywheel_assets.world.pipeline import RoundConfig, behavior_trees, seed_tasks, task_instances  # noqa: E402
from flywheel_assets.world.rollout import run_rollouts  # noqa: E402
from flywheel_assets.world.rubric import score, teacher_filter  # noqa: E402
from flywheel_assets.world.synthesis import seed_instances  # noqa: E402
from flywheel_training.data import trajectory_rows  # noqa: E402
from flywheel_training.policies.local import GenerationSettings, LocalTransformersPolicy  # noqa: E402
from flywheel_training.policies.scripted import ScriptedTeacher  # noqa: E402
from flywheel_training.sft import SFTRunConfig, train_sft  # noqa: E402
from flywheel_training.tiny import TinyConfig, build_tiny  # noqa: E402


def evaluate(model_path: str, instances, *, max_turns: int = 20, settings: GenerationSettings | None = None) -> dict:
    policy = LocalTransformersPolicy(model_path, settings=settings)
    started = time.perf_counter()
    trajectories = run_rollouts(instances, policy, max_turns=max_turns)
    seconds = time.perf_counter() - started
    by_id = {i.instance_id: i for i in instances}
    scores = [score(by_id[t.instance_id], t) for t in trajectories]
    per_domain = defaultdict(list)
    for s in scores:
        per_domain[by_id[s.instance_id].domain].append(s.success)
    return {"pass1": sum(s.success for s in scores) / len(scores),
            "mean_reward": sum(s.reward for s in scores) / len(scores),
            "per_domain_pass1": {d: sum(v) / len(v) for d, v in sorted(per_domain.items())},
            "eval_seconds": round(seconds, 1), "generated_tokens": policy.generated_tokens,
            "gen_tokens_per_s": round(policy.generated_tokens / seconds, 1),
            "terminations": dict(sorted(_count(t.termination for t in trajectories).items())),
            "example": trajectories[0].messages[2:8]}


def _count(items) -> dict:
    out: dict = defaultdict(int)
    for i in items:
        out[i] += 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=".flywheel/cold_start")
    parser.add_argument("--tasks-per-domain", type=int, default=12)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seconds", type=float, default=None, help="wall-clock budget for training")
    parser.add_argument("--max-turns", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--eval-per-domain", type=int, default=10)
    parser.add_argument("--skip-base-eval", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    started = time.perf_counter()
    base = build_tiny(out / "base", TinyConfig())
    print(f"base built in {time.perf_counter() - started:.1f}s")
    config = RoundConfig(seed=0, tasks_per_domain=args.tasks_per_domain)
    seed = seed_tasks(config, "r000")
    instances = task_instances(config, "r000", seed, behavior_trees(seed.tasks))
    trajectories, _, verdicts = teacher_filter(instances, ScriptedTeacher())
    kept = [t for t, v in zip(trajectories, verdicts) if v["verdict"] == "KEEP"]
    print(f"{len(instances)} instances, {len(kept)} kept teacher trajectories")
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    held_out = seed_instances(sorted(DOMAINS), args.eval_per_domain, seed=900_001, round_key="eval").instances
    results: dict = {}
    if not args.skip_base_eval:
        results["base"] = evaluate(str(base), held_out, max_turns=args.max_turns, settings=settings)
        print("base:", json.dumps({k: v for k, v in results["base"].items() if k != "example"}))
    train = train_sft(base, trajectory_rows(kept, instances), out / "sft",
                      SFTRunConfig(max_steps=args.steps, per_device_train_batch_size=args.batch,
                                   learning_rate=args.lr, logging_steps=100, max_seconds=args.seconds),
                      progress=lambda p: print({k: p[k] for k in ("step", "loss", "mean_token_accuracy") if k in p}))
    print(f"trained {train.steps} steps in {train.seconds}s, {train.tokens_per_second} tokens/s, "
          f"losses {[round(x, 3) for x in train.losses]}")
    results["sft"] = evaluate(str(out / "sft"), held_out, max_turns=args.max_turns, settings=settings)
    print("sft:", json.dumps({k: v for k, v in results["sft"].items() if k != "example"}))
    print(json.dumps(results["sft"]["example"], indent=1)[:3000])


if __name__ == "__main__":
    main()
