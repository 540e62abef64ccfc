"""Mock World task synthesis: the complete task first, then the information-deficient rewrite.

``synthesize_task`` generates a world, lets a template pick entities and build the complete
task (goal, workflow, every fact), and executes the workflow to prove it runs. ``rewrite``
turns it into what the agent actually gets: an instruction that leaves out at least one fact
the workflow needs (kept in the hidden user context), the expected path and the rubric.
Everything is a pure function of its seed string.
"""

from __future__ import annotations

import copy
import json
import random
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flywheel_assets.world.domains import get_domain
from flywheel_assets.world.domains.base import Domain, TaskTemplate
from flywheel_assets.world.rubric import build_rubric
from flywheel_assets.world.tasks import (
    ArgSource,
    PathStep,
    RubricItem,
    TaskInstance,
    TaskSpec,
    World,
    WorkflowStep,
    copy_world,
    stable_id,
    world_hash,
)
from flywheel_assets.world.tools import ProceduralToolBackend

SEED_PERSONAS = ("neutral", "neutral", "polite", "non_native")


class SynthesisError(ValueError):
    """A template produced a task whose workflow does not run: a domain-pack bug."""


def resolve(source: ArgSource, context: dict[str, Any], outputs: list[Any]) -> Any:
    if source.kind == "const":
        return copy.deepcopy(source.value)
    if source.kind == "slot":
        return context[source.slot]  # type: ignore[index]
    value = outputs[source.step]  # type: ignore[index]
    for key in source.path:
        value = value[key]
    return value


def execute_workflow(domain: Domain, workflow: list[WorkflowStep], context: dict[str, Any], world: World
                     ) -> tuple[list[PathStep], list[Any], World]:
    """Run the workflow on a copy of ``world``: the concrete calls, their outputs, the end state."""
    backend = ProceduralToolBackend(domain)
    state = copy_world(world)
    calls, outputs = [], []
    for index, wf_step in enumerate(workflow):
        args = {name: resolve(src, context, outputs) for name, src in wf_step.args.items()}
        result = backend.call(state, wf_step.tool, args)
        if not result.ok:
            raise SynthesisError(f"{domain.name} step {index} {wf_step.tool}({args}) failed: {result.content}")
        calls.append(PathStep(action="call", tool=wf_step.tool, args=args))
        outputs.append(json.loads(result.content))
    return calls, outputs, state


def required_slots(workflow: list[WorkflowStep], requires: Sequence[str]) -> list[str]:
    names: list[str] = []
    for wf_step in workflow:
        for src in wf_step.args.values():
            if src.kind == "slot" and src.slot not in names:
                names.append(src.slot)  # type: ignore[arg-type]
    return names + [n for n in requires if n not in names]


def task_for(instance: TaskInstance) -> TaskSpec:
    """The complete task an instance was written from, regenerated from its seed."""
    if "written_by" in instance.meta:
        raise SynthesisError(f"task {instance.task_id} was written by an LLM: it has no seed to regenerate it from")
    domain = get_domain(instance.domain)
    task = synthesize_task(domain, domain.template(instance.task_type), instance.meta["task_seed"])
    if task is None or task.task_id != instance.task_id:
        raise SynthesisError(f"cannot regenerate task {instance.task_id} from its seed")
    return task


def synthesize_task(domain: Domain, template: TaskTemplate, seed: str) -> TaskSpec | None:
    """The complete task for ``seed``, or None when the generated world has no fitting entity."""
    rng = random.Random(seed)
    world = domain.generate_world(rng)
    draft = template.build(rng, world)
    if draft is None:
        return None
    slots = required_slots(draft.workflow, draft.requires)
    for name in slots:
        domain.slot(name)  # every fact a task can hide must be askable
    execute_workflow(domain, draft.workflow, draft.context, world)
    return TaskSpec(
        task_id=stable_id("task", domain.name, template.name, seed),
        domain=domain.name, task_type=template.name, goal=draft.goal, workflow=draft.workflow,
        context=draft.context, required_slots=slots, world=world, outcome=draft.outcome,
        seed=seed,
    )


def placeholders(phrasing: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(phrasing) if field]


def render_value(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def report_text(mentions: list[Any]) -> str:
    return "Your request is complete. Details: " + "; ".join(render_value(m) for m in mentions) + "."


def expected_path(domain: Domain, task: TaskSpec, hidden: list[str]) -> tuple[list[PathStep], World]:
    calls, outputs, final = execute_workflow(domain, task.workflow, task.context, task.world)
    path = [PathStep(action="ask", slots=hidden)] if hidden else []
    mentions = [resolve(src, task.context, outputs) for src in task.outcome]
    return path + calls + [PathStep(action="inform", text=report_text(mentions), mentions=mentions)], final


def information_deficient(task: TaskSpec, rng: random.Random, phrasing_index: int | None = None
                          ) -> tuple[str, list[str], list[str]]:
    """An instruction that states only the facts its phrasing names: (instruction, stated
    slots, hidden slots). At least one required fact is always hidden."""
    templated = task.phrasings or get_domain(task.domain).template(task.task_type).phrasings
    phrasings = [p for p in templated if not set(task.required_slots) <= set(placeholders(p))]
    if not phrasings:
        raise SynthesisError(f"{task.domain}/{task.task_type}: every phrasing states all required facts")
    phrasing = phrasings[phrasing_index % len(phrasings)] if phrasing_index is not None else rng.choice(phrasings)
    stated = placeholders(phrasing)
    instruction = phrasing.format(**{k: render_value(task.context[k]) for k in stated})
    return instruction, stated, [name for name in task.required_slots if name not in stated]


def make_instance(
    task: TaskSpec,
    *,
    round_key: str,
    instruction: str,
    stated: list[str],
    hidden: list[str],
    path: list[PathStep],
    world: World,
    final_world: World,
    persona: str,
    phase: str,
    parent_ids: Sequence[str],
    asked: Sequence[str] | None = None,
    extra_items: Sequence[RubricItem] = (),
    adversarial: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> TaskInstance:
    """Assemble an instance and its rubric. ``asked`` (default: all hidden) are the hidden
    facts this path needs; the user knows every hidden fact either way."""
    domain = get_domain(task.domain)
    known = {json.dumps(v) for v in task.context.values()}
    secrets = [m for s in path if s.action == "inform" for m in s.mentions if json.dumps(m) not in known]
    rubric = build_rubric(path, list(hidden if asked is None else asked), world, final_world,
                          write_tools=domain.write_tools, verification_tools=domain.verification_tools,
                          secrets=secrets)
    rubric.items[-1:-1] = list(extra_items)  # keep termination last
    return TaskInstance(
        instance_id=stable_id("inst", task.task_id, round_key, phase, persona, instruction, list(parent_ids),
                              adversarial, world_hash(world)),
        task_id=task.task_id, domain=task.domain, task_type=task.task_type, round=round_key,
        instruction=instruction,
        hidden_context={k: task.context[k] for k in hidden},
        known_context={k: task.context[k] for k in stated},
        initial_world=world, expected_path=path, rubric=rubric, persona=persona, adversarial=adversarial,
        parent_ids=list(parent_ids), phase=phase,
        meta={"goal": task.goal, "task_seed": task.seed, **({"written_by": task.written_by} if task.written_by else {}),
              **(meta or {})},
    )


def rewrite(
    task: TaskSpec,
    *,
    round_key: str,
    persona: str = "neutral",
    phrasing_index: int | None = None,
    phase: str = "seed",
    parent_ids: Sequence[str] = (),
    rng: random.Random | None = None,
) -> TaskInstance:
    """The information-deficient instance of the complete task on its own world."""
    domain = get_domain(task.domain)
    rng = rng or random.Random(f"{task.seed}/rewrite/{phase}/{persona}")
    instruction, stated, hidden = information_deficient(task, rng, phrasing_index)
    path, final = expected_path(domain, task, hidden)
    return make_instance(task, round_key=round_key, instruction=instruction, stated=stated, hidden=hidden,
                         path=path, world=task.world, final_world=final, persona=persona, phase=phase,
                         parent_ids=parent_ids)


@dataclass
class SeedBatch:
    tasks: list[TaskSpec]
    instances: list[TaskInstance]
    skipped: list[dict[str, str]]  # seeds whose world had no entity for the template
    writer_rejections: list[dict[str, str]] = field(default_factory=list)  # LLM drafts refused, with the reason


def seed_instances(domains: Sequence[str], per_domain: int, *, seed: int | str, round_key: str) -> SeedBatch:
    """``per_domain`` instances for each domain, cycling through its templates."""
    tasks, instances, skipped = [], [], []
    for name in domains:
        domain = get_domain(name)
        made, attempt = 0, 0
        while made < per_domain:
            template = domain.templates[attempt % len(domain.templates)]
            task_seed = f"{seed}/{round_key}/{name}/{attempt}"
            attempt += 1
            if attempt > per_domain * 4 + 20:
                raise SynthesisError(f"{name}: only {made} of {per_domain} tasks after {attempt} attempts")
            try:
                task = synthesize_task(domain, template, task_seed)
            except SynthesisError as exc:  # recorded, not fatal: one bad world must not sink a round
                skipped.append({"seed": task_seed, "template": template.name, "reason": str(exc)})
                continue
            if task is None:
                skipped.append({"seed": task_seed, "template": template.name, "reason": "no fitting entity"})
                continue
            rng = random.Random(f"{task_seed}/persona")
            tasks.append(task)
            instances.append(rewrite(task, round_key=round_key, persona=rng.choice(SEED_PERSONAS), rng=rng))
            made += 1
    return SeedBatch(tasks, instances, skipped)
