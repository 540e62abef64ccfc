"""A round's tasks for its domain files: written by the LLM world writer, kept only when
they validate, replay and the teacher solves them.

For each domain file the writer gets ``tasks_per_domain`` task seeds (more attempts when
drafts are rejected, at most ``ATTEMPTS_PER_TASK`` per task wanted), one of the file's
example workflows as a hint (in turn) and a seed persona. A kept task gets its
information-deficient seed instance exactly as a pack's task does (``synthesis.rewrite``,
with the task's own phrasings); then the round's teacher plays it, and a task the teacher
cannot solve is discarded. Everything not kept is a ``writer_rejections`` row with the
reason and the writer's request hashes (which name its ``llm_calls`` rows).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from flywheel_assets.world.domain_files import DomainFile, loaded_domain_file
from flywheel_assets.world.domains import get_domain
from flywheel_assets.world.rollout import BatchPolicy, UserFactory, make_caches, run_rollouts
from flywheel_assets.world.rubric import score
from flywheel_assets.world.synthesis import SEED_PERSONAS, SeedBatch, rewrite
from flywheel_assets.world.tools import ProceduralToolBackend

if TYPE_CHECKING:
    from flywheel_assets.world.llm.world_writer import LLMWorldWriter
    from flywheel_assets.world.pipeline import RoundConfig

ATTEMPTS_PER_TASK = 3


class WriterMissing(ValueError):
    """A round has domain files but no LLM writes their tasks."""


def rejection(domain: str, kind: str, reason: str, *, task_id: str | None = None, task_seed: str = "",
              request_hashes: list[str] | None = None) -> dict[str, Any]:
    """One ``writer_rejections`` row (the store fills round and stage)."""
    return {"domain": domain, "task_id": task_id, "task_seed": task_seed, "kind": kind, "reason": reason,
            "request_hashes": list(request_hashes or [])}


def write_tasks(config: RoundConfig, round_key: str, world_writer: LLMWorldWriter | None, *,
                teacher: BatchPolicy | None = None, user_factory: UserFactory | None = None) -> SeedBatch:
    """The written tasks and seed instances of every domain file of the round."""
    names = config.written_domain_names
    if world_writer is None:
        raise WriterMissing(f"domain file(s) {', '.join(names)}: their tasks are written by an LLM, and no writer "
                            "model is configured (--world llm with FLYWHEEL_LLM_BASE_URL / FLYWHEEL_LLM_MODEL, or "
                            "--llm-roles including writer)")
    if teacher is None:
        from flywheel_assets.world.teacher import ScriptedTeacher

        teacher = ScriptedTeacher("ask_all_first")
    batch = SeedBatch([], [], [])
    for name in names:
        domain_file = loaded_domain_file(name)
        assert domain_file is not None, name  # RoundConfig loaded every domain file
        _write_domain(batch, config, round_key, domain_file, world_writer)
    _keep_solved(batch, teacher, config.max_turns, user_factory)
    return batch


def _write_domain(batch: SeedBatch, config: RoundConfig, round_key: str, domain_file: DomainFile,
                  world_writer: LLMWorldWriter) -> None:
    backend = ProceduralToolBackend(get_domain(domain_file.name))  # hooks exactly, the rest by the bound simulator
    workflows = list(domain_file.workflows)
    made = 0
    for attempt in range(config.tasks_per_domain * ATTEMPTS_PER_TASK):
        if made == config.tasks_per_domain:
            break
        task_seed = f"{config.seed}/{round_key}/{domain_file.name}/{attempt}"
        rng = random.Random(f"{task_seed}/persona")
        persona = rng.choice(SEED_PERSONAS)
        hint = workflows[attempt % len(workflows)] if workflows else None
        written = world_writer.write_task(domain_file, seed=task_seed, backend=backend, workflow=hint,
                                          persona=persona)
        task_id = written.task.task_id if written.task is not None else None
        batch.writer_rejections += [
            rejection(domain_file.name, "condition", f"{d['name']}: {d['reason']}", task_id=task_id,
                      task_seed=task_seed, request_hashes=written.request_hashes)
            for d in written.dropped_conditions]
        if written.task is None:
            batch.writer_rejections.append(rejection(domain_file.name, "task", written.reason, task_seed=task_seed,
                                                     request_hashes=written.request_hashes))
            continue
        batch.tasks.append(written.task)
        batch.instances.append(rewrite(written.task, round_key=round_key, persona=persona, rng=rng))
        made += 1


def _keep_solved(batch: SeedBatch, teacher: BatchPolicy, max_turns: int, user_factory: UserFactory | None) -> None:
    """Drop the written tasks whose seed instance the teacher fails, with the failed items."""
    if not batch.instances:
        return
    trajectories = run_rollouts(batch.instances, teacher, max_turns=max_turns, caches=make_caches(batch.instances),
                                user_factory=user_factory)
    tasks, instances = [], []
    for task, instance, trajectory in zip(batch.tasks, batch.instances, trajectories, strict=True):
        result = score(instance, trajectory)
        if result.success:
            tasks.append(task)
            instances.append(instance)
            continue
        failed = ", ".join(f"{i.item_id} ({i.detail})" for i in result.failed_items()[:3])
        batch.writer_rejections.append(rejection(
            task.domain, "unsolved", f"the teacher {teacher.name} could not solve it: {failed}", task_id=task.task_id,
            task_seed=task.seed, request_hashes=task.written_by.get("request_hashes", [])))
    batch.tasks, batch.instances = tasks, instances
