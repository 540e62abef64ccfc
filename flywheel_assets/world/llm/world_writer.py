"""The LLM world and task writer: a complete task for a domain file, proven by replay.

For a domain file (``world/domain_files.py``) a model writes the whole task at once: the
goal, the user's opening request, the facts the user knows, the world records the task
needs, the workflow (tool calls with their arguments and the output each returns), what the
agent reports at the end, and the policy conditions that branch it. Everything is checked in
code, each problem named by its place (``workflow[2].arguments.amount: ...``): tools and
argument schemas, where every argument value comes from (a fact, an earlier output, or a
constant the goal states -- mapped to the engine's ``ArgSource``), the records against their
entity schemas, and the workflow replayed through the tool backend (Python hooks exactly,
the rest by the LLM tool), whose outputs must agree with what the model wrote. A task that
passes becomes the engine's ``TaskSpec``, so the procedural phases run on it unchanged; one
that does not is returned with the reason. A condition that fails its checks is dropped
(with its reason) and the task kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from flywheel_assets.world.domain_files import DomainFile, Workflow
from flywheel_assets.world.llm.client import LLMClient, parse_json_object
from flywheel_assets.world.llm.task_checks import (
    Rejected,
    arg_source,
    check_follows,
    check_request,
    check_shape,
    check_tools,
    condition_reason,
    disagreement,
    outcome_sources,
    phrasings,
    written_world,
)
from flywheel_assets.world.synthesis import required_slots
from flywheel_assets.world.tasks import ArgSource, TaskSpec, World, WorkflowStep, canonical_json, copy_world, stable_id

WORLD_WRITER_SYSTEM = (
    "You write complete tasks for a customer-service simulation whose tools and policy you are given. A task is "
    "what one user wants, the facts they know, the records the world must hold for it, the exact tool calls that "
    "achieve it with the output each call returns, and what the agent tells the user at the end. Answer with ONE "
    "JSON object and nothing else:\n"
    '{"goal": "the complete task in words, with the values",\n'
    ' "request": "the user\'s opening request WITHOUT any of the fact values",\n'
    ' "facts": {"<fact_name>": <value>, ...},\n'
    ' "fact_phrases": {"<fact_name>": "how the user calls it"},\n'
    ' "records": {"<collection>": {"<record id>": {<fields>}}},\n'
    ' "workflow": [{"tool": "<tool>", "arguments": {...}, "output": {<fields the call returns>}, '
    '"purpose": "why"}, ...],\n'
    ' "outcome": [{"step": <workflow index>, "field": "<output key>" or ["<key>", ...]}],\n'
    ' "conditions": [{"name": "<identifier>", "description": "what must hold", "guards": ["<write tool>"], '
    '"read_tool": "<read tool called before them>", "field": "<key>" or ["<key>", ...], '
    '"allowed": [<values under which the write is allowed>], "falsify": {"table": "<collection>", '
    '"key_argument": "<argument of the read call naming the record>", "field": "<record field>", '
    '"value": <a value not allowed>}, "claim": "what a user who insists would falsely assert"}]}\n'
    "Rules: fact names are lower_snake_case. Every argument value must equal a fact, a value in an earlier call's "
    "output, or a constant written in the goal. The outputs must be exactly what the tools return on the world "
    "(the seed records plus yours); write only the output fields you are sure of. Records you add must fit their "
    "entity schema. The request must leave the facts for the agent to ask. Conditions come from the policy: each "
    "must hold on this task, and `falsify` changes one record so that it would not."
)

@dataclass
class WrittenTask:
    task: TaskSpec | None  # None: rejected
    reason: str  # "" when kept; else why (the last attempt's reason)
    dropped_conditions: list[dict[str, str]] = field(default_factory=list)  # {"name", "reason"}
    request_hashes: list[str] = field(default_factory=list)  # every writer call for this task, in order
    model: str = ""
    fact_phrases: dict[str, str] = field(default_factory=dict)  # how the user calls a fact, for the mock user

RECORDS_CHARS = 6000
"""Seed records up to this size go into the prompt whole; beyond it each collection is cut."""


def clipped_records(records: World, limit: int = RECORDS_CHARS) -> dict[str, Any]:
    """The seed records, each collection cut to what fits its share of ``limit`` (and the
    number left out), so a large file still fits a prompt."""
    if len(canonical_json(records)) <= limit:
        return records
    share = limit // max(1, len(records))
    shown: dict[str, Any] = {}
    for collection, rows in records.items():
        kept: dict[str, Any] = {}
        used = 0
        for key, row in rows.items():
            used += len(canonical_json({key: row}))
            if used > share:
                break
            kept[key] = row
        shown[collection] = {**kept, **({"...": f"{len(rows) - len(kept)} more not shown"} if len(kept) < len(rows)
                                       else {})}
    return shown


def world_writer_prompt(domain_file: DomainFile, *, seed: str, workflow: Workflow | None = None,
                        persona: str = "neutral") -> list[dict[str, Any]]:
    tools = [{"function": {"name": t.name, "description": t.description, "parameters": t.parameters},
              "access": t.access, **({"output": t.output} if t.output else {}),
              **({"changes": t.changes} if t.changes else {})} for t in domain_file.tools]
    entities = {name: {"description": e.description, "schema": e.record_schema}
                for name, e in domain_file.entities.items()}
    described = next((p.description for p in domain_file.personas if p.name == persona), "")
    hint = ("(none: choose a task the policy allows)" if workflow is None else
            f"{workflow.name}: {workflow.description}\nsteps: " +
            " -> ".join(s.tool + (f" ({s.purpose})" if s.purpose else "") for s in workflow.steps))
    sections = [
        f"Domain: {domain_file.description or domain_file.name}",
        f"Policy:\n{domain_file.policy}",
        "Tools (one per line):\n" + "\n".join(json.dumps(t, ensure_ascii=False) for t in tools),
        f"Entity collections:\n{json.dumps(entities, ensure_ascii=False) if entities else '(not declared)'}",
        f"Seed records (already in the world):\n{canonical_json(clipped_records(domain_file.records))}",
        f"Workflow to write a task for: {hint}",
        f"The user's persona: {persona}{': ' + described if described else ''}",
        f"Task seed (write a task unlike other seeds'): {seed}"]
    user = "\n\n".join(sections)
    return [{"role": "system", "content": WORLD_WRITER_SYSTEM}, {"role": "user", "content": user}]


# --- checking the answer --------------------------------------------------------------------

class LLMWorldWriter:
    """Writes a complete task for a domain file with a model, checks it and replays it."""

    def __init__(self, client: LLMClient, output_retries: int = 1):
        self.client = client
        self.output_retries = output_retries

    def write_task(self, domain_file: DomainFile, *, seed: str, backend: Any, workflow: Workflow | None = None,
                   persona: str = "neutral") -> WrittenTask:
        messages = world_writer_prompt(domain_file, seed=seed, workflow=workflow, persona=persona)
        hashes: list[str] = []
        written = WrittenTask(None, "no answer", model=self.client.config.model)
        for attempt in range(self.output_retries + 1):
            completion = self.client.complete(messages, response_format={"type": "json_object"}, attempt=attempt)
            hashes.append(completion.request_hash)
            answer = parse_json_object(completion.content)
            try:
                written = self._accept(domain_file, answer, seed=seed, backend=backend, workflow=workflow,
                                       hashes=list(hashes))
                break
            except Rejected as exc:
                written = WrittenTask(None, str(exc), model=self.client.config.model)
                # The rejected answer and why, so the retry is a new request the cache cannot answer alike.
                messages = [*messages, {"role": "assistant", "content": completion.content},
                            {"role": "user", "content": f"rejected: {exc}; answer again"}]
        written.request_hashes = hashes
        return written

    def _accept(self, domain_file: DomainFile, answer: Any, *, seed: str, backend: Any, workflow: Workflow | None,
                hashes: list[str]) -> WrittenTask:
        check_shape(answer)
        facts: dict[str, Any] = answer["facts"]
        calls: list[dict[str, Any]] = answer["workflow"]
        check_tools(domain_file, calls)
        if workflow is not None:
            check_follows(workflow, calls)
        world = written_world(domain_file, answer["records"])
        check_request(answer["request"], facts)
        steps, outputs = self._replay(world, calls, facts, answer["goal"], backend)
        outcome = outcome_sources(answer, outputs, facts)
        domain = domain_file.to_domain()
        conditions, dropped, names = [], [], set()
        for index, spec in enumerate(answer.get("conditions") or []):
            try:
                reason = condition_reason(spec, names, calls, outputs, world, domain)
            except (TypeError, ValueError) as exc:  # a list where a name belongs: unhashable, unsearchable
                reason = f"malformed ({type(exc).__name__}: {str(exc)[:100]})"
            name = str(spec.get("name", "")) if isinstance(spec, dict) else ""
            if reason:
                dropped.append({"name": name or f"conditions[{index}]", "reason": f"conditions[{index}]: {reason}"})
            else:
                names.add(name)
                conditions.append(json.loads(json.dumps(spec)))
        phrases = {k: v.strip() for k, v in (answer.get("fact_phrases") or {}).items()}
        task = TaskSpec(
            task_id=stable_id("task", domain_file.name, "written", seed), domain=domain_file.name,
            task_type=workflow.name if workflow is not None else "written", goal=answer["goal"].strip(),
            workflow=steps, context=copy_world(facts), required_slots=required_slots(steps, list(facts)),
            world=world, outcome=outcome, seed=seed, phrasings=phrasings(answer["request"], facts, phrases),
            conditions=conditions, written_by={"model": self.client.config.model, "request_hashes": hashes})
        return WrittenTask(task, "", dropped, hashes, self.client.config.model, phrases)

    @staticmethod
    def _replay(world: World, calls: list[dict[str, Any]], facts: dict[str, Any], goal: str, backend: Any
                ) -> tuple[list[WorkflowStep], list[Any]]:
        """Each call's arguments traced to their source, then run on a copy of the written
        world; the output must agree with what the model wrote."""
        state = copy_world(world)
        steps: list[WorkflowStep] = []
        outputs: list[Any] = []
        history: list[dict[str, Any]] = []
        for index, call in enumerate(calls):
            at = f"workflow[{index}]"
            args: dict[str, ArgSource] = {}
            for name, value in call["arguments"].items():
                try:
                    args[name] = arg_source(value, index, facts, outputs, goal)
                except Rejected as exc:
                    raise Rejected(f"{at}.arguments.{name}: {exc}") from None
            if getattr(backend, "wants_history", False):
                result = backend.call(state, call["tool"], dict(call["arguments"]), history=list(history))
            else:
                result = backend.call(state, call["tool"], dict(call["arguments"]))
            if not result.ok:
                raise Rejected(f"{at} {call['tool']}: the call failed: {result.content[:300]}")
            try:
                output = json.loads(result.content)
            except ValueError:
                raise Rejected(f"{at} {call['tool']}: the tool returned no JSON: {result.content[:200]}") from None
            problem = disagreement(call["output"], output, f"{at}.output")
            if problem:
                raise Rejected(problem)
            history.append({"name": call["tool"], "arguments": call["arguments"], "content": result.content})
            steps.append(WorkflowStep(tool=call["tool"], args=args, purpose=str(call.get("purpose", "")).strip()))
            outputs.append(output)
        return steps, outputs
