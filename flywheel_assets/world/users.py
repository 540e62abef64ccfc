"""Mock users. The procedural user knows the instance's hidden context and reveals a fact
only when the agent asks for it (the question names the slot or a synonym), never hints at
tools or solutions, answers "I don't know" to anything else, and ends the conversation with
``STOP`` once the agent reports back. Personas change how it talks and how much it reveals
per turn; an adversarial user opens with a false claim and pushes back when refused.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from flywheel_assets.world.domains.base import Domain
from flywheel_assets.world.tasks import TaskInstance

STOP = "###STOP###"


class MockUser(Protocol):
    """What the rollout runner needs of a mock user (procedural or LLM).

    ``respond`` gets the agent's text and the whole conversation so far; it sets ``done``
    when the user ends the conversation, and ``failure`` (instead of answering) when a
    simulated user could not produce a usable message, which ends the episode blamed on
    the user simulator."""

    done: bool
    failure: str | None

    def opening(self) -> str: ...

    def respond(self, agent_text: str, conversation: Sequence[dict[str, Any]] = ()) -> str: ...

    def log(self) -> dict[str, Any]: ...

_REQUEST_CUES = re.compile(
    r"\?|\b(provide|tell me|share|give me|let me know|could you|can you|would you|please send|"
    r"what is|what's|which|confirm|need your|need the)\b",
    re.IGNORECASE,
)
# Closing pleasantries are not requests: "Is there anything else I can help with?"
_CLOSER = re.compile(r"\b(anything else|something else|further assistance|help you with today)\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _without_closers(text: str) -> str:
    return " ".join(s for s in _SENTENCE_END.split(text) if not _CLOSER.search(s))


@dataclass(frozen=True)
class Persona:
    name: str
    reveal: str  # how one fact is said: {phrase} and {value}
    lead: str  # said once before the facts of a turn
    dont_know: str
    goodbye: str
    nudge: str
    max_reveals_per_turn: int = 99
    asks_why_first: bool = False


PERSONAS: dict[str, Persona] = {
    p.name: p
    for p in (
        Persona("neutral", "My {phrase} is {value}.", "", "I don't know, sorry.",
                "Great, thank you. That's all I needed.", "Hello? I still need help with my request."),
        Persona("polite", "My {phrase} is {value}.", "Of course!", "I'm afraid I don't know that, sorry.",
                "Wonderful, thank you so much for your help!", "Sorry, are you still there? I need help."),
        Persona("terse", "{value}", "", "Don't know.", "Ok. Bye.", "Well?", max_reveals_per_turn=1),
        Persona("impatient", "{value}.", "Can we hurry this up?", "No idea. Can we move on?",
                "Finally. Thanks.", "I'm waiting. Please help me.", max_reveals_per_turn=1),
        Persona("non_native", "my {phrase} it is {value}", "ok,", "sorry i am not knowing this",
                "ok thank you very much for help", "hello? i need help please"),
        Persona("evasive", "My {phrase} is {value}.", "Fine.", "I'd rather not say, I don't know.",
                "Alright, thanks.", "So? Can you help or not?", max_reveals_per_turn=1, asks_why_first=True),
    )
}


def _render(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


@functools.lru_cache(maxsize=4096)
def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", re.IGNORECASE)


def _mentions(text: str, phrase: str) -> bool:
    return _phrase_pattern(phrase).search(text) is not None


@dataclass
class ProceduralUser:
    instance: TaskInstance
    domain: Domain
    revealed: dict[str, int] = field(default_factory=dict)
    asked_once: set[str] = field(default_factory=set)
    unanswered: int = 0
    escalations_used: int = 0
    turn: int = 0
    done: bool = False
    failure: str | None = None  # the procedural user always answers

    @property
    def persona(self) -> Persona:
        return PERSONAS.get(self.instance.persona, PERSONAS["neutral"])

    def opening(self) -> str:
        text = self.instance.instruction
        claim = (self.instance.adversarial or {}).get("claim")
        return f"{text} {claim}" if claim else text

    def requested_slots(self, text: str) -> list[str]:
        """Hidden slots the text asks for, in the order the instance lists them."""
        text = _without_closers(text)
        if not _REQUEST_CUES.search(text):
            return []
        return [
            name for name in self.instance.hidden_context
            if any(_mentions(text, phrase) for phrase in self.domain.slot(name).synonyms)
        ]

    def respond(self, agent_text: str, conversation: Sequence[dict[str, Any]] = ()) -> str:
        """The user's reply to an agent message that carries no tool call (the procedural
        user reads only that message)."""
        self.turn += 1
        persona = self.persona
        if not agent_text.strip():
            return persona.nudge
        wanted = self.requested_slots(agent_text)
        if wanted:
            return self._reveal(wanted[: persona.max_reveals_per_turn])
        if _REQUEST_CUES.search(_without_closers(agent_text)):
            self.unanswered += 1
            return persona.dont_know
        escalations = (self.instance.adversarial or {}).get("escalations", [])
        if self.escalations_used < len(escalations):
            self.escalations_used += 1
            return escalations[self.escalations_used - 1]
        self.done = True
        return f"{persona.goodbye} {STOP}"

    def _reveal(self, slots: list[str]) -> str:
        persona = self.persona
        questions, facts = [], []
        for name in slots:
            phrase = self.domain.slot(name).phrase
            if persona.asks_why_first and name not in self.asked_once:
                self.asked_once.add(name)
                questions.append(f"Why do you need my {phrase}?")
                continue
            self.revealed.setdefault(name, self.turn)
            facts.append(persona.reveal.format(phrase=phrase, value=_render(self.instance.hidden_context[name])))
        lead = [persona.lead] if facts and persona.lead else []
        return " ".join(lead + facts + questions)

    def log(self) -> dict[str, Any]:
        return {
            "revealed": dict(sorted(self.revealed.items())),
            "unanswered": self.unanswered,
            "escalations_used": self.escalations_used,
            "stopped": self.done,
        }
