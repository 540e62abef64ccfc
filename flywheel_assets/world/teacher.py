"""The scripted teacher: an oracle that follows the instance's expected path.

It is stateless: every turn it reads the conversation to see which steps are done (facts
the user has revealed, successful calls, what it has said) and takes the first step that is
not. It asks the user for hidden facts, verifies before it writes and reports the outcome,
so its trajectories are both training data and the proof that an instance is solvable.
Strategies differ in when they ask, which gives independent solvers for the consistency
filter.
"""

from __future__ import annotations

import functools
import json
import random
import re
from collections.abc import Sequence
from typing import Any

from flywheel_assets.world.domains import get_domain
from flywheel_assets.world.rollout import PolicyRequest
from flywheel_assets.world.rubric import call_events, same_args
from flywheel_assets.world.synthesis import render_value
from flywheel_assets.world.tasks import Message, PathStep, stable_id

STRATEGIES = ("ask_all_first", "just_in_time")


def tool_call_message(name: str, args: dict[str, Any], call_id: str, content: str | None = None) -> Message:
    return {"role": "assistant", "content": content,
            "tool_calls": [{"id": call_id, "type": "function",
                            "function": {"name": name, "arguments": json.dumps(args)}}]}


@functools.lru_cache(maxsize=8192)
def _token_pattern(value: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w.-]){re.escape(value)}(?![\w-]|\.\w)", re.IGNORECASE)


def contains_token(text: str, value: str) -> bool:
    """``value`` stands in ``text`` as a whole token, not inside a longer id or number."""
    return value.lower() in text.lower() and _token_pattern(value).search(text) is not None


def uses_value(args: dict[str, Any], value: Any) -> bool:
    """Whether a call's arguments take ``value`` verbatim (or as an element of a list)."""
    return any(v == value or (isinstance(v, list) and value in v) for v in args.values())


class ScriptedTeacher:
    def __init__(self, strategy: str = "ask_all_first"):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown teacher strategy {strategy!r}; choose one of {STRATEGIES}")
        self.strategy = strategy
        self.name = "teacher" if strategy == "ask_all_first" else f"teacher-{strategy}"

    def generate(self, requests: Sequence[PolicyRequest]) -> list[Message]:
        return [self.next_message(r) for r in requests]

    def next_message(self, request: PolicyRequest) -> Message:
        inst = request.instance
        messages = request.messages
        domain = get_domain(inst.domain)
        replies = " ".join(m.get("content") or "" for m in messages[2:] if m.get("role") == "user")
        said = [m.get("content") or "" for m in messages if m.get("role") == "assistant"]
        events = call_events(messages)
        n_calls = sum(len(m.get("tool_calls") or []) for m in messages)

        def missing(slots: Sequence[str]) -> list[str]:
            return [s for s in slots if not contains_token(replies, render_value(inst.hidden_context[s]))]

        def ask(slots: list[str]) -> Message:
            phrases = [domain.slot(s).phrase for s in slots]
            listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
            return {"role": "assistant", "content": f"Could you please tell me your {listed}?"}

        hidden_left = missing(list(inst.hidden_context))
        final: PathStep | None = None
        for step in inst.expected_path:
            if step.action == "ask":
                if self.strategy == "ask_all_first" and hidden_left:
                    return ask(hidden_left)
            elif step.action == "call":
                if self.strategy == "just_in_time":
                    needed = [s for s in hidden_left if uses_value(step.args, inst.hidden_context[s])]
                    if needed:
                        return ask(needed[:1])
                if not any(e.name == step.tool and same_args(e.args or {}, step.args) and (e.ok or step.expect_error)
                           for e in events):
                    return tool_call_message(step.tool, step.args, f"call_{n_calls}")  # type: ignore[arg-type]
            elif step.action in ("inform", "refuse"):
                final = step
                if hidden_left:
                    return ask(hidden_left[:1])
                if step.text not in said:
                    return {"role": "assistant", "content": step.text}
        # Everything is done and the user is still talking (pushing back): hold the line.
        if final is None:
            raise ValueError(f"instance {inst.instance_id}: the expected path has no inform or refuse step")
        return {"role": "assistant", "content": final.text}


class FlakyTeacher:
    """The scripted teacher, except on a deterministic share of instances where it skips
    asking for the hidden facts and reports straight away: a policy that fails on purpose,
    so tests and quick looks have failures to turn into hard samples."""

    def __init__(self, fail_share: float = 0.5, seed: int = 0):
        self.teacher = ScriptedTeacher()
        self.fail_share = fail_share
        self.seed = seed
        self.name = f"flaky-teacher-{fail_share:g}"

    def fails_on(self, instance_id: str, sample: int) -> bool:
        return random.Random(stable_id("flaky", self.seed, instance_id, sample)).random() < self.fail_share

    def generate(self, requests: Sequence[PolicyRequest]) -> list[Message]:
        return [{"role": "assistant", "content": "I have taken care of it. Your request is complete."}
                if self.fails_on(r.instance.instance_id, r.sample) else self.teacher.next_message(r)
                for r in requests]
