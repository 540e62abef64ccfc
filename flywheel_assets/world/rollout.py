"""The episode loop and the batched rollout runner.

One turn of all live episodes runs in batched phases: one policy call for all of them (a
batched model serves them together), then all their tool calls and all their user replies.
With simulated (LLM) users or tools, those run concurrently across episodes (an episode's
own tool calls in order), so an LLM world costs about turns x latency, not episodes x turns
x latency. The procedural roles take the same path, in order, on one thread.

Whatever the policy returns is normalised into a valid OpenAI assistant message (its text
repaired where it cannot be encoded); anything malformed becomes an error observation the
agent sees and the rubric scores, never an exception. An episode a simulator failed ends
with termination ``simulator_failure`` and ``failed_by`` naming the simulator.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from flywheel_assets.world.domains import get_domain
from flywheel_assets.world.domains.base import Domain
from flywheel_assets.world.llm.text import clean_json, clean_text
from flywheel_assets.world.tasks import Message, TaskInstance, Trajectory, stable_id
from flywheel_assets.world.tools import ProceduralToolBackend, TaskToolCache, ToolBackend, ToolSession, error
from flywheel_assets.world.users import MockUser, ProceduralUser

UserFactory = Callable[[TaskInstance, Domain], MockUser]
BackendFactory = Callable[[Domain], ToolBackend]

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
    message: Message = {"role": "assistant", "content": clean_text(_clip(content)) if content else None}
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
                         "function": {"name": _clip(call.name), "arguments": clean_text(_clip(arguments))}})
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
    call_id = clean_text(call_id)
    function = raw_call.get("function")
    if not isinstance(function, dict):
        return ParsedCall(call_id, "", None, "a tool call needs a function object")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        return ParsedCall(call_id, "", None, "a tool call needs a function name")
    name = clean_text(name)
    arguments = function.get("arguments", "{}")
    if isinstance(arguments, str):
        # A \\u escape can decode to a lone surrogate: only then is the parsed value repaired.
        escaped = "\\u" in arguments
        try:
            arguments = json.loads(clean_text(arguments)) if arguments.strip() else {}
        except (ValueError, RecursionError):
            return ParsedCall(call_id, name, None, "arguments are not valid JSON")
    else:
        escaped = True  # an object from a policy in this process: anything may be in it
    if not isinstance(arguments, dict):
        return ParsedCall(call_id, name, None, "arguments must be a JSON object")
    return ParsedCall(call_id, name, clean_json(arguments) if escaped else arguments, None)


@dataclass
class Episode:
    """One conversation. ``step`` plays a whole turn; the runner calls its three phases
    (``receive``, ``run_tools``, ``reply``) itself so that each phase is batched across
    episodes, then ``end_turn``."""

    instance: TaskInstance
    domain: Domain
    tools: ToolSession
    user: MockUser
    max_turns: int
    sample: int = 0
    messages: list[Message] = field(default_factory=list)
    turns: int = 0
    termination: str | None = None
    failed_by: str | None = None
    pending: list[ParsedCall] = field(default_factory=list)
    awaiting_user: bool = False

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
        self.receive(raw)
        self.run_tools()
        self.reply()
        self.end_turn()

    def receive(self, raw: Any) -> None:
        """Phase 1: record the policy's message; its tool calls wait for ``run_tools``."""
        if isinstance(raw, ContextExhausted):
            self._end("context_length", "agent")
            return
        self.turns += 1
        message, calls = normalize_assistant(raw, self.turns)
        self.messages.append(message)
        self.pending = calls
        self.awaiting_user = not calls

    def run_tools(self) -> None:
        """Phase 2: this episode's tool calls, in order (a later call may read an earlier write)."""
        calls, self.pending = self.pending, []
        for call in calls:
            result = error(call.problem) if call.problem else self.tools.call(call.name, call.arguments or {})
            self.messages.append({"role": "tool", "tool_call_id": call.call_id, "name": _clip(call.name),
                                  "content": result.content})
            if result.failure:
                self._end("simulator_failure", result.failure)
                return
            if result.ok and call.name == self.domain.transfer_tool:
                self.termination = "transfer"

    def reply(self) -> None:
        """Phase 3: the user answers a message that carried no tool call."""
        if not self.awaiting_user or self.done:
            return
        self.awaiting_user = False
        text = self.user.respond(self.messages[-1]["content"] or "", self.messages)
        if self.user.failure:
            self._end("simulator_failure", "user")
            return
        self.messages.append({"role": "user", "content": text})
        if self.user.done:
            self.termination = "user_stop"

    def end_turn(self) -> None:
        if not self.done and self.turns >= self.max_turns:
            self._end("max_turns", "agent")

    def _end(self, termination: str, failed_by: str) -> None:
        self.termination = termination
        self.failed_by = failed_by
        self.pending = []
        self.awaiting_user = False

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
            failed_by=self.failed_by if self.termination else "agent",
        )


def make_caches(instances: Sequence[TaskInstance], backend_for: BackendFactory | None = None
                ) -> dict[str, TaskToolCache]:
    """One consistency cache per instance; ``backend_for`` builds the tool backend of a
    domain (default: the domain's procedural tools)."""
    backend_for = backend_for or ProceduralToolBackend
    backends: dict[str, ToolBackend] = {}
    caches = {}
    for inst in instances:
        if inst.domain not in backends:
            backends[inst.domain] = backend_for(get_domain(inst.domain))
        caches[inst.instance_id] = TaskToolCache(backends[inst.domain], inst.initial_world)
    return caches


def _default_concurrency(user_factory: Any, caches: Iterable[TaskToolCache]) -> int:
    """What the roles ask for (an LLM role's ``concurrency``); procedural roles ask for 1."""
    wanted = [getattr(user_factory, "concurrency", 1)] + [getattr(c.backend, "concurrency", 1) for c in caches]
    return max(1, *wanted)


class _Phases:
    """Runs one phase over many episodes: inline when one worker is wanted (the procedural
    world: same order, no thread overhead), else on a shared thread pool."""

    def __init__(self, workers: int):
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rollout") if workers > 1 else None

    def run(self, jobs: Sequence[tuple[Callable[[Any], None], Any]]) -> None:
        """``fn(arg)`` for every job, in order when inline; re-raises the first failure (an
        endpoint failing for good) after the jobs already started have finished."""
        if self.pool is None or len(jobs) <= 1:
            for fn, arg in jobs:
                fn(arg)
            return
        futures = [self.pool.submit(fn, arg) for fn, arg in jobs]
        for future in futures:
            future.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _run_tools_in_order(group: Sequence[Episode]) -> None:
    for episode in group:
        episode.run_tools()


def run_rollouts(
    instances: Sequence[TaskInstance],
    policy: BatchPolicy,
    *,
    samples: int = 1,
    max_turns: int = 30,
    caches: dict[str, TaskToolCache] | None = None,
    progress: Callable[[int, int], None] | None = None,
    user_factory: UserFactory | None = None,
    backend_for: BackendFactory | None = None,
    concurrency: int | None = None,
) -> list[Trajectory]:
    """Play ``samples`` episodes per instance, all turns batched across live episodes.

    ``caches`` (one per instance id) may be passed in to share the consistency cache with
    another policy's rollouts on the same tasks; by default every instance gets its own,
    over ``backend_for``'s tool backend. ``user_factory`` builds each episode's mock user
    (default: procedural). ``concurrency`` bounds the threads of the tool and user phases
    (default: what the roles ask for; 1 for procedural roles).

    Tool calls of episodes on the same instance run one after another in episode order:
    they share a consistency cache, and a fixed order makes which episode's call fills it
    -- and so every later answer -- the same on every run.
    """
    caches = caches if caches is not None else make_caches(instances, backend_for)
    user_factory = user_factory or ProceduralUser
    episodes = []
    for inst in instances:
        domain = get_domain(inst.domain)
        for sample in range(samples):
            episodes.append(Episode(inst, domain, caches[inst.instance_id].session(),
                                    user_factory(inst, domain), max_turns, sample))
    tools_by_domain = {name: [s.openai_schema() for s in get_domain(name).tool_specs]
                       for name in sorted({e.domain.name for e in episodes})}
    workers = concurrency if concurrency is not None else _default_concurrency(user_factory, caches.values())
    phases = _Phases(workers)
    finished = 0
    try:
        while live := [e for e in episodes if not e.done]:
            requests = [PolicyRequest(e.messages, tools_by_domain[e.domain.name], e.instance, e.sample) for e in live]
            replies = policy.generate(requests)
            if len(replies) != len(live):
                raise RuntimeError(f"policy {policy.name} returned {len(replies)} messages for {len(live)} requests")
            for episode, reply in zip(live, replies):
                episode.receive(reply)
            by_task: dict[int, list[Episode]] = {}
            for episode in live:
                if episode.pending:
                    by_task.setdefault(id(episode.tools.cache), []).append(episode)
            # An episode either called tools or awaits its user this turn, never both, so the
            # two phases touch disjoint episodes and run as one batch: a turn then costs
            # about one call's latency, not two.
            phases.run([(_run_tools_in_order, group) for group in by_task.values()]
                       + [(Episode.reply, e) for e in live if e.awaiting_user and not e.done])
            for episode in live:
                episode.end_turn()
                if episode.done:
                    finished += 1
            if progress:
                progress(finished, len(episodes))
    finally:
        phases.close()
    return [e.trajectory(policy.name) for e in episodes]
