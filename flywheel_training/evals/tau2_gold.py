"""τ²-bench gold replay: the harness's own test, and τ²'s replay of the same tasks to time
it against.

Through the harness (``gold_replay``): a scripted policy issues the task's gold actions one
per step, then states its ``communicate_info`` facts; τ²'s orchestrator runs it as the
agent with a scripted user that opens the conversation and stops at the agent's first
text reply; τ²'s evaluator scores it. No LLM is involved, so only tasks whose reward basis
is DB and/or COMMUNICATE and whose gold actions are all the agent's can be replayed (all
of airline's and retail's; telecom's need the user's own device actions).

τ²'s own replay (``reference_replay``): the same trajectory built directly from τ²'s
environment and message types, without Flywheel, and the same evaluator.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from flywheel_assets.world.rollout import PolicyRequest
from flywheel_training.evals.bfcl import GoldComparison
from flywheel_training.evals.tau2 import (DEFAULT_SPLIT, OPENING, Tau2Run, _basis, _tau2, load_tasks,
                                          run_simulations, summarize)

GOLD_REWARD_BASES = frozenset({"DB", "COMMUNICATE"})


class GoldPolicy:
    """Issues the task's gold actions one per step, then states its ``communicate_info``.
    Reads the privileged payload (the τ² task)."""

    name = "tau2-gold"

    def generate(self, requests: Sequence[PolicyRequest]) -> list[dict[str, Any]]:
        return [self._reply(r) for r in requests]

    def _reply(self, request: PolicyRequest) -> dict[str, Any]:
        criteria = request.instance.payload.evaluation_criteria
        done = sum(1 for m in request.messages if m.get("role") == "tool")
        actions = list(criteria.actions or [])
        if done < len(actions):
            action = actions[done]
            return {"role": "assistant", "content": None,
                    "tool_calls": [{"id": f"gold_{done}", "type": "function",
                                    "function": {"name": action.name, "arguments": json.dumps(action.arguments)}}]}
        return {"role": "assistant", "content": closing_text(request.instance.payload)}


def closing_text(task: Any) -> str:
    facts = list(task.evaluation_criteria.communicate_info or [])
    return "Done. " + " ".join(facts) if facts else "Done."


def gold_replayable(task: Any) -> bool:
    """Tasks whose reward needs no LLM and whose gold actions are all the agent's."""
    criteria = task.evaluation_criteria
    return (criteria is not None and set(_basis(task)) <= GOLD_REWARD_BASES
            and all(a.requestor == "assistant" for a in criteria.actions or []))


def gold_replay(domain: str = "retail", *, split: str | None = DEFAULT_SPLIT, limit: int | None = None,
                wave_size: int = 32) -> Tau2Run:
    """Replay the gold actions of every gold-replayable task through the harness."""
    tasks = [t for t in load_tasks(domain, split, limit) if gold_replayable(t)]
    policy = GoldPolicy()
    outcomes = run_simulations(policy, domain, tasks, wave_size=wave_size)
    run = Tau2Run(domain, split or "all", len(tasks), 1, policy.name, "scripted", outcomes)
    run.results = summarize(outcomes, domain=domain, split=run.split, trials=1, agent=policy.name,
                            user_model="scripted")
    return run


def reference_replay(domain: str, tasks: Sequence[Any]) -> list[float]:
    """τ²'s own replay: each task's gold trajectory built from its environment and message
    types (no Flywheel agent, no orchestrator), scored by its evaluator. The rewards."""
    _tau2()
    from tau2.data_model.message import AssistantMessage, ToolCall, UserMessage
    from tau2.data_model.simulation import SimulationRun, TerminationReason
    from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation
    from tau2.registry import registry
    from tau2.user.base import STOP

    rewards = []
    for task in tasks:
        environment = registry.get_env_constructor(domain)()
        state = task.initial_state
        environment.set_state(initialization_data=state.initialization_data if state else None,
                              initialization_actions=state.initialization_actions if state else None,
                              message_history=[])
        messages: list[Any] = [AssistantMessage(role="assistant", content="Hi! How can I help you today?"),
                               UserMessage(role="user", content=OPENING)]
        for index, action in enumerate(task.evaluation_criteria.actions or []):
            call = ToolCall(id=f"gold_{index}", name=action.name, arguments=action.arguments, requestor="assistant")
            messages += [AssistantMessage(role="assistant", tool_calls=[call]), environment.get_response(call)]
        messages += [AssistantMessage(role="assistant", content=closing_text(task)), UserMessage(role="user",
                                                                                                 content=STOP)]
        for turn, message in enumerate(messages):
            message.turn_idx = turn
        simulation = SimulationRun(id=str(uuid.uuid4()), task_id=task.id, start_time="", end_time="", duration=0.0,
                                   termination_reason=TerminationReason.USER_STOP, messages=messages)
        rewards.append(float(evaluate_simulation(simulation=simulation, task=task, evaluation_type=EvaluationType.ALL,
                                                 solo_mode=False, domain=domain).reward))
    return rewards


def compare_gold(domain: str = "retail", *, split: str | None = DEFAULT_SPLIT, limit: int | None = None
                 ) -> GoldComparison:
    """valid (reward 1) / total and seconds: the harness's gold replay beside τ²'s own."""
    tasks = [t for t in load_tasks(domain, split, limit) if gold_replayable(t)]
    start = time.perf_counter()
    outcomes = run_simulations(GoldPolicy(), domain, tasks)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    reference = reference_replay(domain, tasks)
    return GoldComparison("tau2", domain, len(tasks), sum(o.reward == 1.0 for o in outcomes), seconds,
                          sum(r == 1.0 for r in reference), time.perf_counter() - start)
