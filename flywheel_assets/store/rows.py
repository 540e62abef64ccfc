"""World objects ⇄ warehouse rows.

Each ``*_rows`` function gives the rows of one table (every column but ``round`` and
``position``, which the store fills); each ``*_from_rows`` rebuilds the objects a later stage
needs from the full-object JSON column, so a round read back is the round that was written.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import Any

from flywheel_assets.store.warehouse import JsonText
from flywheel_assets.world.augment import AugmentReport
from flywheel_assets.world.behavior_tree import BehaviorTree
from flywheel_assets.world.synthesis import SeedBatch
from flywheel_assets.world.tasks import Score, TaskInstance, TaskSpec, Trajectory, json_fields, stable_id

Row = dict[str, Any]


def _fields(value: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_fields(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_text(obj: Any) -> JsonText:
    """``canonical_json(obj.to_dict())`` for the world's dataclasses, about ten times faster:
    ``to_dict`` deep-copies the whole object (worlds included) before serialising it."""
    return JsonText(json.dumps(obj, default=_fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


def seed_task_rows(batch: SeedBatch) -> list[Row]:
    # seed_instances makes exactly one seed instance per task, in the same order
    rows = []
    for task, instance in zip(batch.tasks, batch.instances, strict=True):
        if instance.task_id != task.task_id:
            raise ValueError(f"seed instance {instance.instance_id} belongs to {instance.task_id}, not {task.task_id}")
        rows.append({"task_id": task.task_id, "domain": task.domain, "task_type": task.task_type, "goal": task.goal,
                     "seed": task.seed, "required_slots": task.required_slots,
                     "seed_instance_id": instance.instance_id, "task": json_text(task),
                     "seed_instance": json_text(instance)})
    return rows


def seed_batch_from_rows(rows: Iterable[Row]) -> SeedBatch:
    rows = list(rows)
    return SeedBatch(tasks=[TaskSpec.from_dict(r["task"]) for r in rows],
                     instances=[TaskInstance.from_dict(r["seed_instance"]) for r in rows], skipped=[])


def tree_rows(trees: Sequence[BehaviorTree]) -> list[Row]:
    rows = []
    for tree in trees:
        stats = tree.stats()
        rows.append({"tree_id": tree.tree_id, "task_id": tree.task_id, "domain": tree.domain, "phase": tree.phase,
                     "parent_ids": list(tree.parent_ids), "depth": stats["depth"], "branches": stats["branches"],
                     "paths": stats["paths"], "tree": tree.to_dict()})
    return rows


def trees_from_rows(rows: Iterable[Row]) -> list[BehaviorTree]:
    return [BehaviorTree.from_dict(r["tree"]) for r in rows]


def instance_rows(instances: Sequence[TaskInstance]) -> list[Row]:
    return [{"instance_id": i.instance_id, "task_id": i.task_id, "domain": i.domain, "task_type": i.task_type,
             "phase": i.phase, "persona": i.persona, "adversarial": i.adversarial is not None,
             "parent_ids": list(i.parent_ids), "carried_from": i.meta.get("carried_from"),
             "instruction": i.instruction, "instance": json_text(i)} for i in instances]


def instances_from_rows(rows: Iterable[Row], column: str = "instance") -> list[TaskInstance]:
    return [TaskInstance.from_dict(r[column]) for r in rows if r[column] is not None]


def role_of(trajectory_policy: str, policy_name: str) -> str:
    """'policy' for the rollouts of the round's policy, 'teacher' for the teacher's."""
    return "policy" if trajectory_policy == policy_name else "teacher"


def rollout_rows(trajectories: Sequence[Trajectory], policy_name: str) -> list[Row]:
    return [{"trajectory_id": t.trajectory_id, "instance_id": t.instance_id, "policy": t.policy,
             "role": role_of(t.policy, policy_name), "termination": t.termination, "turns": t.turns,
             "tool_calls": t.tool_stats.get("hits", 0) + t.tool_stats.get("misses", 0),
             "cache_hits": t.tool_stats.get("hits", 0), "tool_errors": t.tool_stats.get("errors", 0),
             "trajectory": json_text(t)} for t in trajectories]


def trajectories_from_rows(rows: Iterable[Row]) -> list[Trajectory]:
    return [Trajectory.from_dict(r["trajectory"]) for r in rows]


def score_id(trajectory_id: str) -> str:
    return stable_id("score", trajectory_id)


def score_rows(scores: Sequence[Score], trajectories: Sequence[Trajectory], policy_name: str) -> list[Row]:
    policy_of = {t.trajectory_id: t.policy for t in trajectories}
    return [{"score_id": score_id(s.trajectory_id), "trajectory_id": s.trajectory_id, "instance_id": s.instance_id,
             "policy": policy_of[s.trajectory_id], "role": role_of(policy_of[s.trajectory_id], policy_name),
             "reward": float(s.reward), "success": bool(s.success), "gate": s.gate,
             "failed_items": [i.item_id for i in s.failed_items()], "score": json_text(s)} for s in scores]


def scores_from_rows(rows: Iterable[Row]) -> list[Score]:
    return [Score.from_dict(r["score"]) for r in rows]


def hard_sample_rows(report: AugmentReport) -> list[Row]:
    """One row per generated candidate (kept or dropped by the consistency filter), the
    instance only for kept ones. Operators that could not apply made no candidate, so no row:
    ``report.counts()`` has them."""
    variants = {v.instance_id: v for v in report.variants}
    rows = []
    for record in report.records:
        if record["variant_id"] is None:
            continue
        variant = variants.get(record["variant_id"]) if record["kept"] else None
        if record["kept"] and variant is None:
            raise ValueError(f"hard sample {record['variant_id']} is recorded as kept but is not in the report")
        rows.append({"instance_id": record["variant_id"], "parent_id": record["parent_id"],
                     "operator": record["operator"], "kept": bool(record["kept"]), "reason": record.get("reason") or None,
                     "task_id": variant.task_id if variant else None, "domain": variant.domain if variant else None,
                     "instruction": variant.instruction if variant else None,
                     "instance": json_text(variant) if variant else None})
    return rows


def eval_task_rows(batch: SeedBatch, instances: Sequence[TaskInstance] | None = None) -> list[Row]:
    """Rows of the held-out set: ``instances`` (default: the batch's seed instances) with their
    task; an augmented variant on a task of its own (new values, two tasks combined) has none,
    its instance holds everything scoring needs."""
    tasks = {t.task_id: t for t in batch.tasks}
    return [{"instance_id": i.instance_id, "task_id": i.task_id, "domain": i.domain, "task_type": i.task_type,
             "persona": i.persona, "instruction": i.instruction, "instance": json_text(i),
             "task": json_text(tasks[i.task_id]) if i.task_id in tasks else None}
            for i in (batch.instances if instances is None else instances)]
