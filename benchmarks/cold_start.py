"""What the base's synthetic pretraining buys: the round-0 cold start from a random-init
base against the same cold start from the pretrained base (``flywheel_training/pretrain.py``).

Both arms build the embedded model from the same config except the pretraining steps, then
run the same SFT (the round defaults of ``config.TrainingConfig``: teacher solutions of
one round's instances, renamed-id copies, fixed steps) and are measured on the held-out set:

- call accuracy: at every tool call of the teacher's held-out solutions, given the
  conversation so far, does the model (greedy) call the same tool, and with the same
  arguments? Argument accuracy is the copying the pretraining is for.
- held-out pass^1 and mean reward, greedy, per phase.

    python benchmarks/cold_start.py [--out .flywheel/cold_start] [--steps 1200]

Prints the figures measured in this run (build and training seconds included).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from flywheel_assets.world import pipeline  # noqa: E402
from flywheel_assets.world.rollout import PolicyRequest, run_rollouts  # noqa: E402
from flywheel_assets.world.rubric import score  # noqa: E402
from flywheel_assets.world.tasks import TaskInstance, Trajectory  # noqa: E402
from flywheel_training.data import tools_for, trajectory_rows  # noqa: E402
from flywheel_training.evals.heldout import evaluate  # noqa: E402
from flywheel_training.policies.local import GenerationSettings, LocalTransformersPolicy  # noqa: E402
from flywheel_assets.world.teacher import ScriptedTeacher  # noqa: E402
from flywheel_training.config import TrainingConfig  # noqa: E402
from flywheel_training.sft import SFTRunConfig, train_sft  # noqa: E402
from flywheel_training.tiny import TinyConfig, build_tiny  # noqa: E402


def round_instances(config: pipeline.RoundConfig, round_key: str) -> list[TaskInstance]:
    batch = pipeline.seed_tasks(config, round_key)
    return pipeline.task_instances(config, round_key, batch, pipeline.behavior_trees(batch.tasks))


def teacher_solutions(instances: list[TaskInstance]) -> list[Trajectory]:
    by_id = {i.instance_id: i for i in instances}
    return [t for t in run_rollouts(instances, ScriptedTeacher(), max_turns=12) if score(by_id[t.instance_id], t).success]


def call_accuracy(policy: LocalTransformersPolicy, instances: list[TaskInstance],
                  solutions: list[Trajectory]) -> dict[str, float]:
    """Teacher-forced: the model's next message at each of the teacher's tool calls."""
    by_id = {i.instance_id: i for i in instances}
    requests, wanted = [], []
    for t in solutions:
        inst = by_id[t.instance_id]
        for k, message in enumerate(t.messages):
            if message["role"] == "assistant" and message.get("tool_calls"):
                requests.append(PolicyRequest(t.messages[:k], tools_for(inst.domain), inst, 0))
                function = message["tool_calls"][0]["function"]
                arguments = function["arguments"]
                wanted.append((function["name"], json.loads(arguments) if isinstance(arguments, str) else arguments))
    names = arguments = 0
    for got, (name, args) in zip(policy.generate(requests), wanted):
        calls = got.get("tool_calls") or []
        if calls and calls[0]["function"]["name"] == name:
            names += 1
            try:
                arguments += json.loads(calls[0]["function"]["arguments"]) == args
            except ValueError:
                pass
    return {"calls": len(wanted), "tool_accuracy": names / len(wanted), "argument_accuracy": arguments / len(wanted)}


def run_arm(name: str, tiny: TinyConfig, rows: list[dict[str, Any]], heldout: list[TaskInstance],
            solutions: list[Trajectory], out: Path, steps: int) -> dict[str, Any]:
    started = time.perf_counter()
    base = build_tiny(out / name / "base", tiny)
    built = time.perf_counter() - started
    defaults = TrainingConfig()
    trained = train_sft(base, rows, out / name / "sft", SFTRunConfig(
        learning_rate=defaults.sft_learning_rate, max_steps=steps, per_device_train_batch_size=defaults.batch_size,
        id_augment=defaults.id_augment, logging_steps=100))
    policy = LocalTransformersPolicy(out / name / "sft", settings=GenerationSettings(max_new_tokens=80))
    result = evaluate(policy, heldout, trials=1, max_turns=pipeline.RoundConfig().max_turns)
    return {"arm": name, "build_s": round(built, 1), "train_s": trained.seconds, "final_loss": trained.final_loss,
            **call_accuracy(policy, heldout, solutions),
            **{row["group"]: round(row["pass^1"], 3) for row in result.rows if not row["group"].startswith("domain")},
            "reward": round(result.overall()["reward_mean"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".flywheel/cold_start")
    parser.add_argument("--steps", type=int, default=TrainingConfig().sft_steps)
    parser.add_argument("--tasks-per-domain", type=int, default=12)
    args = parser.parse_args()
    out = Path(args.out)
    instances = round_instances(pipeline.RoundConfig(seed=0, tasks_per_domain=args.tasks_per_domain), "r000")
    rows = trajectory_rows(teacher_solutions(instances), instances)
    heldout = round_instances(pipeline.RoundConfig(seed=900_001, tasks_per_domain=5, backtranslated_per_tree=1,
                                                   adversarial_share=0.5), "eval")
    solutions = teacher_solutions(heldout)
    print(f"{len(rows)} teacher conversations to train on; held-out: {len(heldout)} tasks", flush=True)
    pretrained = TinyConfig()
    arms = {"random init": replace(pretrained, induction_steps=0, recall_steps=0), "pretrained": pretrained}
    results = []
    for name, tiny in arms.items():
        results.append(run_arm(name.replace(" ", "_"), tiny, rows, heldout, solutions, out, args.steps))
        print(json.dumps(results[-1]), flush=True)
    print(f"\ncold start: SFT {args.steps} steps on the same data, held-out set of {len(heldout)} tasks (greedy)")
    columns = ["arm", "build_s", "train_s", "tool_accuracy", "argument_accuracy", "all", "phase:linear",
               "phase:branched", "phase:adversarial", "reward"]
    print(" | ".join(columns))
    for r in results:
        print(" | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in columns))
    first, second = results
    if first["argument_accuracy"]:
        print(f"argument accuracy ratio pretrained / random init: "
              f"{second['argument_accuracy'] / first['argument_accuracy']:.1f}x")
    else:
        print(f"argument accuracy: random init 0, pretrained {second['argument_accuracy']:.3f}")


if __name__ == "__main__":
    main()
