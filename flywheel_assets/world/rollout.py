"""The episode loop and the batched rollout runner.

The runner asks the policy once per turn for the next assistant message of every live
episode, so a batched model serves all of them in one call. Whatever the policy returns is
normalised into a valid OpenAI assistant message; anything malformed becomes an error
observation the agent sees and the rubric scores, never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from flywheel_assets.world.domains import get_domain
from flywheel_assets.world.domains.base import Domain
from flywheel_assets.world.tasks import Message, TaskInstance, Trajectory, stable_id
from flywheel_assets.world.tools import ProceduralToolBackend, TaskToolCache, ToolBackend, ToolSession, error
from flywheel_assets.world.users import ProceduralUser

MAX_RECORDED_CHARS = 8192
"""Longer text from a model is cut when recorded: the episode still sees that it was sent."""


@dataclass
class PolicyRequest:
    """One live conversation. ``instance`` is privileged: only a scripted oracle reads it."""

    messages: list[Message]
    tools: list[dict[str, Any]]
    instance: TaskInstance
    sample: int = 0


class BatchPolicy(Protocol):
    name: str

    def generate(self, requests: Sequence[PolicyRequest]) -> list[Any]:
        """The next assistant message for each request (OpenAI format), in order."""
        ...


@dataclass(frozen=True)
class ContextExhausted:
    """What a policy returns for a conversation that no longer fits its context window.

    The episode ends there (termination ``context_length``, which fails the rubric's
    termination gate) instead of the endpoint's refusal failing the whole batch: an
    over-long episode is the agent's outcome, not the endpoint's fault.
    """

    detail: str = ""


@dataclass
class ParsedCall:
    call_id: str
    name: str
    arguments: dict[str, Any] | None
    problem: str | None


def _clip(text: str) -> str:
    if len(text) <= MAX_RECORDED_CHARS:
        return text
    return text[:MAX_RECORDED_CHARS] + f"...[{len(text) - MAX_RECORDED_CHARS} more characters]"


def normalize_assistant(raw: Any, turn: int) -> tuple[Message, list[ParsedCall]]:
    """A valid assistant message to record and the tool calls to execute, from anything."""
    if isinstance(raw, str):
        raw = {"content": raw}
    if not isinstance(raw, dict):
        raw = {"content": repr(raw)}
    content = raw.get("content")
    if content is not None and not isinstance(content, str):
        content = json.dumps(content, default=repr) if isinstance(content, (list, dict)) else repr(content)
    message: Message = {"role": "assistant", "content": _clip(content) if content else None}
    raw_calls = raw.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raw_calls = [raw_calls]
    calls: list[ParsedCall] = []
    recorded: list[dict[str, Any]] = []
    for index, raw_call in enumerate(raw_calls):
        call = parse_tool_call(raw_call, f"call_{turn}_{index}")
        calls.append(call)
        arguments = json.dumps(call.arguments) if call.arguments is not None else _raw_arguments(raw_call)
        recorded.append({"id": call.call_id, "type": "function",
                         "function": {"name": _clip(call.name), "arguments": _clip(arguments)}})
    if recorded:
        message["tool_calls"] = recorded
    return message, calls


def _raw_arguments(raw_call: Any) -> str:
    function = raw_call.get("function") if isinstance(raw_call, dict) else None
    arguments = function.get("arguments") if isinstance(function, dict) else None
    return arguments if isinstance(arguments, str) else json.dumps(arguments, default=repr)


def parse_tool_call(raw_call: Any, default_id: str) -> ParsedCall:
    if not isinstance(raw_call, dict):
        return ParsedCall(default_id, "", None, "a tool call must be an object")
    call_id = raw_call.get("id") if isinstance(raw_call.get("id"), str) and raw_call.get("id") else default_id
    function = raw_call.get("function")
    if not isinstance(function, dict):
        return ParsedCall(call_id, "", None, "a tool call needs a function object")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        return ParsedCall(call_id, "", None, "a tool call needs a function name")
    arguments = function.get("arguments", "{}")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError):
            return ParsedCall(call_id, name, None, "arguments are not valid JSON")
    if not isinstance(arguments, dict):
        return ParsedCall(call_id, name, None, "arguments must be a JSON object")
    return ParsedCall(call_id, name, arguments, None)


@dataclass
class Episode:
    instance: TaskInstance
    domain: Domain
    tools: ToolSession
    user: ProceduralUser
    max_turns: int
    sample: int = 0
    messages: list[Message] = field(default_factory=list)
    turns: int = 0
    termination: str | None = None

    def __post_init__(self) -> None:
        if not self.messages:
            self.messages = [
                {"role": "system", "content": self.domain.system_prompt()},
                {"role": "user", "content": self.user.opening()},
            ]

    @property
    def done(self) -> bool:
        return self.termination is not None

    def step(self, raw: Any) -> None:
        """Apply one assistant message: run its tool calls, or let the user answer it."""
        if isinstance(raw, ContextExhausted):
            self.termination = "context_length"
            return
        self.turns += 1
        message, calls = normalize_assistant(raw, self.turns)
        self.messages.append(message)
        for call in calls:
            result = error(call.problem) if call.problem else self.tools.call(call.name, call.arguments or {})
            self.messages.append({"role": "tool", "tool_call_id": call.call_id, "name": _clip(call.name),
                                  "content": result.content})
            if result.ok and call.name == self.domain.transfer_tool:
                self.termination = "transfer"
        if not calls and not self.done:
            reply = self.user.respond(message["content"] or "")
            self.messages.append({"role": "user", "content": reply})
            if self.user.done:
                self.termination = "user_stop"
        if not self.done and self.turns >= self.max_turns:
            self.termination = "max_turns"

    def trajectory(self, policy_name: str) -> Trajectory:
        return Trajectory(
            trajectory_id=stable_id("traj", self.instance.instance_id, policy_name, self.sample),
            instance_id=self.instance.instance_id,
            policy=policy_name,
            messages=self.messages,
            termination=self.termination or "max_turns",
            turns=self.turns,
            final_world=self.tools.world,
            user_log=self.user.log(),
            tool_stats=self.tools.stats.as_dict(),
        )


def make_caches(instances: Sequence[TaskInstance], backend_for: Callable[[Domain], ToolBackend] | None = None
                ) -> dict[str, TaskToolCache]:
    backend_for = backend_for or ProceduralToolBackend
    backends: dict[str, ToolBackend] = {}
    caches = {}
    for inst in instances:
        if inst.domain not in backends:
            backends[inst.domain] = backend_for(get_domain(inst.domain))
        caches[inst.instance_id] = TaskToolCache(backends[inst.domain], inst.initial_world)
    return caches


def run_rollouts(
    instances: Sequence[TaskInstance],
    policy: BatchPolicy,
    *,
    samples: int = 1,
    max_turns: int = 30,
    caches: dict[str, TaskToolCache] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Trajectory]:
    """Play ``samples`` episodes per instance, all turns batched across live episodes.

    ``caches`` (one per instance id) may be passed in to share the consistency cache with
    another policy's rollouts on the same tasks; by default every instance gets its own.
    """
    caches = caches if caches is not None else make_caches(instances)
    episodes = []
    for inst in instances:
        domain = get_domain(inst.domain)
        for sample in range(samples):
            episodes.append(Episode(inst, domain, caches[inst.instance_id].session(),
                                    ProceduralUser(inst, domain), max_turns, sample))
    tools_by_domain = {name: [s.openai_schema() for s in get_domain(name).tool_specs]
                       for name in sorted({e.domain.name for e in episodes})}
    finished = 0
    while live := [e for e in episodes if not e.done]:
        requests = [PolicyRequest(e.messages, tools_by_domain[e.domain.name], e.instance, e.sample) for e in live]
        replies = policy.generate(requests)
        if len(replies) != len(live):
            raise RuntimeError(f"policy {policy.name} returned {len(replies)} messages for {len(live)} requests")
        for episode, reply in zip(live, replies):
            episode.step(reply)
            if episode.done:
                finished += 1
        if progress:
            progress(finished, len(episodes))
    return [e.trajectory(policy.name) for e in episodes]
