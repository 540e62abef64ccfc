"""A training step of the embedded model with ``transformers``' ``sdpa`` attention and with
``flywheel_sdpa`` (flywheel_training/attention.py), on the same batches.

Builds the teacher's conversations for ``--tasks`` tasks per domain (the cold start's data),
tokenizes them as SFT does (chat template, the model's prompt view), and times forward +
backward on right-padded batches of ``--batch`` conversations, one thread, alternating the two
implementations batch by batch so both see the same machine. Prints seconds per step for
each, the ratio, and the largest difference of the loss and of the gradients.

    python benchmarks/attention_kernels.py [--model PATH] [--tasks 4] [--batch 2] [--steps 12]

Without ``--model`` it builds the embedded base (its weights do not change the timing).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from flywheel_assets.world.domains import DOMAINS  # noqa: E402
from flywheel_assets.world.rollout import run_rollouts  # noqa: E402
from flywheel_assets.world.synthesis import seed_instances  # noqa: E402
from flywheel_assets.world.teacher import ScriptedTeacher  # noqa: E402
from flywheel_training.attention import use_flywheel_attention  # noqa: E402
from flywheel_training.chat import render  # noqa: E402
from flywheel_training.data import trajectory_rows, view_rows  # noqa: E402
from flywheel_training.tiny import TinyConfig, build_tiny  # noqa: E402


def step(model, ids: torch.Tensor, mask: torch.Tensor) -> tuple[float, float, list[torch.Tensor]]:
    model.zero_grad()
    started = time.perf_counter()
    labels = ids.masked_fill(mask == 0, -100)
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    seconds = time.perf_counter() - started
    return seconds, float(loss.detach()), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="model folder (default: build the embedded base)")
    parser.add_argument("--tasks", type=int, default=4, help="tasks per domain")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model_path = args.model or str(build_tiny(tempfile.mkdtemp(prefix="flywheel-bench-") + "/base",
                                              TinyConfig(induction_steps=0, recall_steps=0)))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    instances = seed_instances(sorted(DOMAINS), args.tasks, seed=7, round_key="bench").instances
    rows = view_rows(trajectory_rows(run_rollouts(instances, ScriptedTeacher(), max_turns=30), instances), tokenizer)
    texts = [render(tokenizer, r["messages"], json.loads(r["tools"]), add_generation_prompt=False) for r in rows]
    tokenizer.padding_side = "right"
    reference = AutoModelForCausalLM.from_pretrained(model_path)
    flywheel = AutoModelForCausalLM.from_pretrained(model_path)
    use_flywheel_attention(flywheel)
    timings = {"sdpa": 0.0, "flywheel_sdpa": 0.0}
    loss_diff = grad_diff = 0.0
    tokens = 0
    for n in range(args.steps):
        batch = [texts[(n * args.batch + i) % len(texts)] for i in range(args.batch)]
        encoded = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        tokens += int(encoded["attention_mask"].sum())
        ref_s, ref_loss, ref_grads = step(reference, encoded["input_ids"], encoded["attention_mask"])
        fly_s, fly_loss, fly_grads = step(flywheel, encoded["input_ids"], encoded["attention_mask"])
        timings["sdpa"] += ref_s
        timings["flywheel_sdpa"] += fly_s
        loss_diff = max(loss_diff, abs(ref_loss - fly_loss))
        grad_diff = max(grad_diff, max(float((a - b).abs().max()) for a, b in zip(ref_grads, fly_grads)))
    print(f"{args.steps} steps of {args.batch} conversations ({tokens / args.steps:.0f} real tokens a step), one thread")
    for name, seconds in timings.items():
        print(f"{name}: {seconds / args.steps:.3f} s per forward + backward")
    print(f"sdpa/flywheel_sdpa time ratio: {timings['sdpa'] / timings['flywheel_sdpa']:.2f}x")
    print(f"largest difference: loss {loss_diff:.2e}, gradient {grad_diff:.2e}")


if __name__ == "__main__":
    main()
