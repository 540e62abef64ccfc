"""Reference policies that are not trying to solve the task: a do-nothing policy and a
random one. They anchor the bottom of the reward scale and exercise the environment."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

from flywheel_assets.world.rollout import PolicyRequest
from flywheel_assets.world.tasks import Message, stable_id


class DoNothingPolicy:
    name = "do-nothing"

    def generate(self, requests: Sequence[PolicyRequest]) -> list[Message]:
        return [{"role": "assistant", "content": "Okay, I understand."} for _ in requests]


class RandomPolicy:
    """Random questions, random tool calls with arguments copied from the conversation or
    made up, and random garbage: seeded per conversation and turn."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.name = f"random-{seed}"

    def generate(self, requests: Sequence[PolicyRequest]) -> list[Message]:
        return [self._one(r) for r in requests]

    def _one(self, request: PolicyRequest) -> Message:
        rng = random.Random(stable_id("rnd", self.seed, request.instance.instance_id, request.sample,
                                      len(request.messages)))
        words = " ".join(m.get("content") or "" for m in request.messages[1:]).split() or ["hello"]
        choice = rng.random()
        if choice < 0.3:
            return {"role": "assistant", "content": f"What is your {rng.choice(words)}?"}
        if choice < 0.4:
            return {"role": "assistant", "content": rng.choice(["Done.", "Your request is complete.", ""])}
        tool = rng.choice(request.tools)["function"]
        args: dict[str, Any] = {}
        for name, schema in tool["parameters"].get("properties", {}).items():
            if rng.random() < 0.8:
                args[name] = [rng.choice(words)] if schema.get("type") == "array" else rng.choice(words)
        arguments = json.dumps(args) if rng.random() < 0.9 else "{not json"
        return {"role": "assistant", "content": None,
                "tool_calls": [{"id": f"r{len(request.messages)}", "type": "function",
                                "function": {"name": tool["name"], "arguments": arguments}}]}
