"""The seed-expansion summary: per domain, trees, branches and paths, instances per phase,
the adversarial share, and what the consistency filter kept and dropped when a policy's
failures are augmented. ``flywheel expansion`` prints it.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from flywheel_assets.world import pipeline
from flywheel_assets.world.rollout import BatchPolicy


def expansion_summary(config: pipeline.RoundConfig, policy: BatchPolicy, round_key: str = "r000"
                      ) -> list[dict[str, Any]]:
    """One round's seed expansion and augmentation, summarised per domain (plus "all")."""
    seed = pipeline.seed_tasks(config, round_key)
    trees = pipeline.behavior_trees(seed.tasks)
    instances = pipeline.task_instances(config, round_key, seed, trees)
    trajectories = pipeline.rollouts(config, instances, policy)
    scores = pipeline.rubric_scores(instances, trajectories)
    report = pipeline.hard_samples(config, round_key, instances, trajectories, scores, policy.name)
    domain_of = {i.instance_id: i.domain for i in instances}
    rows = []
    for domain in [*config.domain_names, "all"]:
        mine = [i for i in instances if domain in ("all", i.domain)]
        expanded = [t for t in trees if t.phase == "expanded" and domain in ("all", t.domain)]
        phases = Counter(i.phase for i in mine)
        records = [r for r in report.records if domain in ("all", domain_of[r["parent_id"]])]
        generated = [r for r in records if r["variant_id"]]
        rows.append({
            "domain": domain,
            "trees": len(expanded),
            "branches/tree": statistics.fmean(t.stats()["branches"] for t in expanded) if expanded else 0.0,
            "paths": sum(t.stats()["paths"] for t in expanded),
            "seed": phases["seed"], "branched": phases["branched"], "adversarial": phases["adversarial"],
            "adversarial share": phases["adversarial"] / len(mine) if mine else 0.0,
            "failed": len({r["parent_id"] for r in records}),
            "generated": len(generated),
            "kept": sum(r["kept"] for r in generated),
            "dropped": sum(not r["kept"] for r in generated),
            "not applicable": len(records) - len(generated),
        })
    return rows


def drop_reasons(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    reasons: dict[str, int] = defaultdict(int)
    for r in records:
        if not r["kept"]:
            reasons[f"{r['operator']}: {r['reason'].split(':')[0]}"] += 1
    return dict(reasons)
