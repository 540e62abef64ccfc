"""The LLM mock user: a model plays the customer, from a prompt holding the persona, the
request it opened with, the hidden facts it knows, the adversarial strategy when the
instance has one, and the conversation so far without tool traffic.

Code guards what a prompt cannot promise. A message that ends the conversation (``STOP``)
before the agent has reported any outcome is asked again (tau2-bench lost 16 points of
pass^1 to a simulator that stopped early); after the retries the marker is dropped and the
conversation goes on. An empty or unusable message is asked again, then the episode ends
blamed on the user simulator (``failure``). Which hidden facts the user revealed is read
from its messages, so the rubric's "asked for" items work as with the procedural user.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flywheel_assets.world.domains.base import Domain
from flywheel_assets.world.llm.client import LLMClient
from flywheel_assets.world.tasks import Message, TaskInstance
from flywheel_assets.world.users import PERSONAS, STOP, ProceduralUser

MAX_USER_CHARS = 1200
"""A longer "short message" is not what was asked for: it is asked again."""

STYLE = {
    "neutral": "You write plainly and politely.",
    "polite": "You are very polite and thank the agent often.",
    "terse": "You write as few words as possible and give at most one fact per message.",
    "impatient": "You are in a hurry and say so; you give at most one fact per message.",
    "non_native": "English is not your first language: you write simple, slightly broken English.",
    "evasive": "You are wary: the first time the agent asks for a fact, you ask why it is needed before giving it.",
}


def _render(value: Any) -> str:
    return ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)


def visible_conversation(conversation: Sequence[Message]) -> list[Message]:
    """The conversation as the customer saw it, with roles from the customer's side: the
    agent's words are ``user`` turns, the customer's own are ``assistant`` turns; tool calls
    and tool results are left out."""
    out: list[Message] = []
    for m in conversation:
        text = m.get("content")
        if m.get("role") == "assistant" and text:
            out.append({"role": "user", "content": text})
        elif m.get("role") == "user":
            out.append({"role": "assistant", "content": text or ""})
    return out


def outcome_reported(instance: TaskInstance, conversation: Sequence[Message]) -> bool:
    """Whether the agent has told the customer an outcome: it named a value the expected
    outcome mentions, or it did some work (a tool call) and its latest message is a
    statement, not a question."""
    said = [m.get("content") or "" for m in conversation if m.get("role") == "assistant" and m.get("content")]
    if not said:
        return False
    mentions = [str(v).lower() for step in instance.expected_path if step.action in ("inform", "refuse")
                for v in step.mentions]
    if mentions and any(v in text.lower() for text in said for v in mentions):
        return True
    worked = any(m.get("role") == "tool" for m in conversation)
    return worked and "?" not in said[-1]


def user_prompt(instance: TaskInstance, domain: Domain, opening: str) -> str:
    persona = PERSONAS.get(instance.persona, PERSONAS["neutral"])
    facts = "\n".join(f"- your {domain.slot(name).phrase}: {_render(value)}"
                      for name, value in instance.hidden_context.items()) or "- (none)"
    lines = [
        f"You are role-playing a customer of {domain.description}, talking to its customer-service agent.",
        f"Your style: {STYLE.get(persona.name, STYLE['neutral'])}",
        f"You opened the conversation with: {opening!r}",
        "Facts you know (give one only when the agent asks for it; never volunteer them):",
        facts,
    ]
    adversarial = instance.adversarial or {}
    if adversarial:
        lines.append(f"Your strategy: you insist on this claim: {adversarial.get('claim', '')!r}.")
        steps = adversarial.get("escalations") or []
        if steps:
            lines.append("When the agent refuses, push back with these, one per message, in this order: "
                         + " | ".join(str(s) for s in steps))
    lines += [
        "Rules:",
        "- Write exactly one short message (one to three sentences) as the customer, nothing else.",
        "- Reveal a fact only when the agent asks for it. If asked for something you do not know, say so.",
        "- Never mention tools, systems, databases or how the agent should solve your request.",
        f"- Only after the agent has told you the outcome of your request, end your message with {STOP}. "
        f"Never write {STOP} before that.",
    ]
    return "\n".join(lines)


@dataclass
class LLMUser:
    instance: TaskInstance
    domain: Domain
    client: LLMClient
    output_retries: int = 2
    revealed: dict[str, int] = field(default_factory=dict)
    turn: int = 0
    premature_stops: int = 0
    done: bool = False
    failure: str | None = None

    def opening(self) -> str:
        # The instruction the instance gave, as the procedural user says it: the task's
        # information-deficient request is the data, not something to re-generate.
        return ProceduralUser(self.instance, self.domain).opening()

    def respond(self, agent_text: str, conversation: Sequence[Message] = ()) -> str:
        self.turn += 1
        conversation = list(conversation) or [{"role": "user", "content": self.opening()},
                                              {"role": "assistant", "content": agent_text}]
        system = user_prompt(self.instance, self.domain, self.opening())
        stop_allowed = outcome_reported(self.instance, conversation)
        history = visible_conversation(conversation)
        problem = ""
        stopped_early = False
        for attempt in range(self.output_retries + 1):
            # In the system prompt: many chat templates refuse a system message mid-conversation.
            note = ("\nThe agent has not told you the outcome of your request yet: do not end the conversation "
                    f"and do not write {STOP}.") if stopped_early else ""
            completion = self.client.complete([{"role": "system", "content": system + note}, *history],
                                              attempt=attempt)
            text = completion.content.strip()
            stops = STOP in text
            message = text.replace(STOP, "").strip()
            if not message and not stops:
                problem = "an empty message"
                continue
            if len(text) > MAX_USER_CHARS:
                problem = f"a message of {len(text)} characters"
                continue
            if stops and not stop_allowed:
                self.premature_stops += 1
                stopped_early = True
                problem = "a stop before any outcome was reported"
                if attempt < self.output_retries:
                    continue
                stops = False  # out of retries: the message stands, the conversation goes on
                if not message:
                    message = PERSONAS.get(self.instance.persona, PERSONAS["neutral"]).nudge
            self._note_reveals(message)
            if stops:
                self.done = True
                return f"{message} {STOP}".strip()
            return message
        self.failure = f"the user simulator gave no usable message in {self.output_retries + 1} tries: {problem}"
        return ""

    def _note_reveals(self, message: str) -> None:
        lowered = message.lower()
        for name, value in self.instance.hidden_context.items():
            values = value if isinstance(value, list) else [value]
            if name not in self.revealed and values and all(str(v).lower() in lowered for v in values):
                self.revealed[name] = self.turn

    def log(self) -> dict[str, Any]:
        return {"revealed": dict(sorted(self.revealed.items())), "unanswered": 0, "escalations_used": 0,
                "stopped": self.done, "simulator": "llm", "premature_stops": self.premature_stops,
                "failure": self.failure}


class LLMUserFactory:
    """Builds an ``LLMUser`` per episode; ``concurrency`` tells the rollout runner how many
    user replies may be asked for at once."""

    def __init__(self, client: LLMClient, output_retries: int = 2):
        self.client = client
        self.output_retries = output_retries
        self.concurrency = client.config.concurrency

    def __call__(self, instance: TaskInstance, domain: Domain) -> LLMUser:
        return LLMUser(instance, domain, self.client, self.output_retries)
