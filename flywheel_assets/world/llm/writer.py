"""The LLM task writer: the rewrite step of synthesis with a model's words.

Given a complete procedural task (goal, workflow, every fact), the writer asks a model for
the customer's information-deficient opening request, once plainly and once in the
persona's voice. Which facts it may state comes from the procedural rewrite's choice, so the
same seed hides the same facts. The draft is then checked in code: at least one required
value must be absent from both texts (and so be left to the hidden user context); a draft
that states them all, or that is not the JSON asked for, is rejected with the reason.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from flywheel_assets.world.domains import get_domain
from flywheel_assets.world.domains.base import Domain
from flywheel_assets.world.llm.client import LLMClient, parse_json_object
from flywheel_assets.world.llm.user import STYLE
from flywheel_assets.world.tasks import TaskInstance, TaskSpec

MAX_INSTRUCTION_CHARS = 600


@dataclass
class WriterDraft:
    instruction: str
    persona_phrasing: str
    stated: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)
    accepted: bool = False
    reason: str = ""


def _render(value: Any) -> str:
    return ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _phrase(domain: Domain, name: str) -> str:
    """How a fact is called: its slot's wording, or its name for a context value that is no slot."""
    try:
        return domain.slot(name).phrase
    except KeyError:
        return name.replace("_", " ")


def states(text: str, value: Any) -> bool:
    """Whether ``text`` gives ``value`` (every element of a list), case-insensitively."""
    values = value if isinstance(value, list) else [value]
    lowered = text.lower()
    return bool(values) and all(str(v).lower() in lowered for v in values)


def check_draft(task: TaskSpec, instruction: str, persona_phrasing: str) -> tuple[list[str], list[str], str]:
    """(stated slots, hidden slots, rejection reason or ""): a required value must be absent
    from both texts and present in the context that becomes the hidden user context."""
    texts = f"{instruction}\n{persona_phrasing}"
    stated = [s for s in task.required_slots if states(texts, task.context[s])]
    hidden = [s for s in task.required_slots if s not in stated and s in task.context]
    if not instruction.strip() or not persona_phrasing.strip():
        return stated, hidden, "the draft lacks the instruction or the persona's phrasing"
    if max(len(instruction), len(persona_phrasing)) > MAX_INSTRUCTION_CHARS:
        return stated, hidden, f"the draft is longer than {MAX_INSTRUCTION_CHARS} characters"
    if not hidden:
        return stated, hidden, "the instruction states every required value; nothing is left for the user to reveal"
    return stated, hidden, ""


class LLMTaskWriter:
    def __init__(self, client: LLMClient, output_retries: int = 1):
        self.client = client
        self.output_retries = output_retries

    def draft(self, task: TaskSpec, persona: str = "neutral") -> WriterDraft:
        from flywheel_assets.world.synthesis import information_deficient

        domain = get_domain(task.domain)
        # The procedural rewrite's choice of facts, so the same seed hides the same ones.
        _, may_state, _ = information_deficient(task, random.Random(f"{task.seed}/rewrite/seed/{persona}"))
        stated = "\n".join(f"- {_phrase(domain, s)}: {_render(task.context[s])}" for s in may_state
                           if s in task.context) or "- (none)"
        withheld = ", ".join(_phrase(domain, s) for s in task.required_slots if s not in may_state)
        messages = [
            {"role": "system", "content": "You write the opening message a customer sends to customer service. "
                                          'Answer with a JSON object {"instruction": "...", "persona_phrasing": "..."} '
                                          "only."},
            {"role": "user", "content": (
                f"Domain: {domain.description}\nThe customer's goal: {task.goal}\n"
                f"Facts the message may state:\n{stated}\n"
                f"Facts the message must NOT state (the agent has to ask for them): {withheld or '(none)'}\n"
                "Write `instruction`: one or two plain sentences asking for the goal. Write `persona_phrasing`: the "
                f"same request in this customer's voice: {STYLE.get(persona, STYLE['neutral'])} Never mention "
                "tools, systems or how to solve the request.")},
        ]
        last = WriterDraft("", "", accepted=False, reason="no answer")
        for attempt in range(self.output_retries + 1):
            answer = parse_json_object(self.client.complete(messages, response_format={"type": "json_object"},
                                                            attempt=attempt).content)
            if answer is None or not isinstance(answer.get("instruction"), str) \
                    or not isinstance(answer.get("persona_phrasing"), str):
                last = WriterDraft("", "", accepted=False,
                                   reason="the answer is not a JSON object with instruction and persona_phrasing")
                continue
            instruction, phrasing = answer["instruction"].strip(), answer["persona_phrasing"].strip()
            stated_slots, hidden, reason = check_draft(task, instruction, phrasing)
            last = WriterDraft(instruction, phrasing, stated_slots, hidden, accepted=not reason, reason=reason)
            if last.accepted:
                break
        return last

    def rewrite(self, task: TaskSpec, *, round_key: str, persona: str = "neutral", phase: str = "seed",
                parent_ids: tuple[str, ...] = ()) -> tuple[TaskInstance | None, WriterDraft]:
        """The instance of ``task`` with the writer's instruction (persona's phrasing), or
        None and the rejected draft with its reason."""
        from flywheel_assets.world.synthesis import expected_path, make_instance

        draft = self.draft(task, persona)
        if not draft.accepted:
            return None, draft
        path, final = expected_path(get_domain(task.domain), task, draft.hidden)
        instance = make_instance(task, round_key=round_key, instruction=draft.persona_phrasing,
                                 stated=draft.stated, hidden=draft.hidden, path=path, world=task.world,
                                 final_world=final, persona=persona, phase=phase, parent_ids=parent_ids,
                                 meta={"writer": self.client.config.model, "plain_instruction": draft.instruction})
        return instance, draft
