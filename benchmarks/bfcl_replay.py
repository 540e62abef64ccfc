"""Flywheel's BFCL gold replay against BFCL's own replay-and-check of the same entries.

- Flywheel: the full harness (``flywheel_training.evals.bfcl``): a scripted policy answers
  each turn with the ground-truth calls as OpenAI tool calls, the safe executor runs them on
  fresh instances, and BFCL's state and response checkers compare each turn with the
  ground truth run on its own fresh instances.
- BFCL: ``multi_turn_checker`` as shipped (its ``eval`` executor), given the ground truth
  as the model's decoded result, as its eval runner would after inference.

Loading the entries (BFCL's ``load_dataset_entry``) is done once, outside both timings.
Each side runs ``--repeats`` times; the best time of each is compared.

    python benchmarks/bfcl_replay.py [--limit N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

from flywheel_training.evals import bfcl


def flywheel_replay(entries: list[bfcl.BfclEntry]) -> int:
    return sum(o.valid for o in bfcl.score(bfcl.play(bfcl.GoldPolicy(), entries)))


def best_time(fn, entries: list[bfcl.BfclEntry], repeats: int) -> tuple[float, int]:
    best, valid = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        valid = fn(entries)
        best = min(best, time.perf_counter() - start)
    return best, valid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="entries per category (default: all 200)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    start = time.perf_counter()
    entries = [e for c in bfcl.CATEGORIES for e in bfcl.load_entries(c, args.limit)]
    print(f"loaded {len(entries)} entries in {time.perf_counter() - start:.2f}s (not timed below)")
    ours, ours_valid = best_time(flywheel_replay, entries, args.repeats)
    theirs, theirs_valid = best_time(bfcl.reference_replay, entries, args.repeats)
    print(f"flywheel harness gold replay: {ours_valid}/{len(entries)} valid, {ours:.2f}s (best of {args.repeats})")
    print(f"BFCL replay-and-check:        {theirs_valid}/{len(entries)} valid, {theirs:.2f}s (best of {args.repeats})")
    print(f"ratio flywheel/BFCL: {ours / theirs:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
