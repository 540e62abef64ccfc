"""τ²-bench through Flywheel's harness: gold replay on retail, refusals of unsafe or
malformed tool calls, and a domain run end to end where both the agent policy and τ²'s
user simulator (through litellm) talk to a scripted OpenAI-compatible server.

Needs the benchmark packages (``python -m flywheel_training.evals.install``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from support.scripted_openai import ScriptedOpenAI, tool_call

from flywheel_assets.world.rollout import PolicyRequest
from flywheel_training.evals import tau2, tau2_gold
from flywheel_training.policies.openai_compat import OpenAICompatiblePolicy


class Recording:
    """Wraps a policy and records the size of every batch it is asked for."""

    def __init__(self, policy: Any):
        self.policy = policy
        self.name = policy.name
        self.batches: list[int] = []

    def generate(self, requests: Sequence[PolicyRequest]) -> list[Any]:
        self.batches.append(len(requests))
        return self.policy.generate(requests)


def test_the_package_ships_the_task_counts_we_report() -> None:
    assert (len(tau2.load_tasks("airline")), len(tau2.load_tasks("retail"))) == (50, 114)


@pytest.mark.slow
def test_telecom_ships_114_base_tasks_of_2285() -> None:  # slow: τ² parses all 2,285 to pick a split
    assert tau2.task_counts() == {"airline": 50, "retail": 114, "telecom": 114}
    assert len(tau2.load_tasks("telecom", split=None)) == 2285


def test_retail_gold_replay_of_a_fixed_sample_reaches_reward_1() -> None:
    tasks = tau2.load_tasks("retail", limit=2)
    assert all(tau2_gold.gold_replayable(t) for t in tasks)
    policy = Recording(tau2_gold.GoldPolicy())
    outcomes = tau2.run_simulations(policy, "retail", tasks)
    assert [(o.task_id, o.reward, o.termination) for o in outcomes] == [(t.id, 1.0, "user_stop") for t in tasks]
    assert policy.batches[0] == len(tasks)  # lockstep: one policy call serves every simulation
    assert tau2_gold.reference_replay("retail", tasks) == [1.0] * len(tasks)  # τ²'s own replay agrees


@pytest.mark.slow
def test_retail_gold_replay_of_every_task_reaches_reward_1() -> None:
    run = tau2_gold.gold_replay("retail")
    assert run.tasks == 114
    assert [o.task_id for o in run.outcomes if o.reward != 1.0] == []
    assert [(r.metric, r.value) for r in run.results] == [("avg_reward", 1.0), ("pass^1", 1.0)]


def test_unsafe_and_malformed_calls_are_refused_without_running() -> None:
    task = tau2.load_tasks("retail", limit=1)[0]
    actions = task.evaluation_criteria.actions

    class Tampering:
        """The gold actions with an extra argument each (so none may run), then a
        calculate that would compute for ever, then a text reply."""

        name = "tampering"

        def generate(self, requests: Sequence[PolicyRequest]) -> list[dict[str, Any]]:
            replies = []
            for r in requests:
                done = sum(m["role"] == "tool" for m in r.messages)
                if done < len(actions):
                    a = actions[done]
                    replies.append({"content": None, "tool_calls": [
                        tool_call(f"t{done}", a.name, {**a.arguments, "admin_override": True})]})
                elif done == len(actions):
                    replies.append({"content": None, "tool_calls": [
                        tool_call("calc", "calculate", {"expression": "9**9**9**9**9"})]})
                else:
                    replies.append({"content": "Done."})
            return replies

    [outcome] = tau2.run_simulations(Tampering(), "retail", [task])
    assert outcome.refused_calls == len(actions) + 1
    assert outcome.reward == 0.0  # the database never changed, so the gold state is not reached


def test_refusal_rules() -> None:
    schema = {"properties": {"expression": {"type": "string"}}, "required": ["expression"]}
    assert tau2._refusal("calculate", {"expression": "2 * (3 + 4)"}, schema) is None
    assert "exponentiation" in tau2._refusal("calculate", {"expression": "2**8"}, schema)
    assert "missing" in tau2._refusal("calculate", {}, schema)
    assert "no parameter" in tau2._refusal("calculate", {"expression": "1", "__class__": 1}, schema)
    assert "longer" in tau2._refusal("calculate", {"expression": "1" * 1_000_000}, schema)


# --- end to end over HTTP -------------------------------------------------------------------
def scripted_world(tasks: Sequence[Any]):
    """Both sides of a τ² conversation: the user (recognised by τ²'s user-simulator prompt)
    names its task and stops after the agent's report; the agent plays the gold actions of
    the task the user named."""
    by_id = {t.id: t for t in tasks}

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        messages = request["messages"]
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        if "<scenario>" in system:  # τ²'s user simulator
            task = next(t for t in tasks if str(t.user_scenario) in system)
            spoken = sum(m["role"] == "assistant" for m in messages)  # roles are flipped for the user
            return {"content": f"Hello, this is about task {task.id}." if spoken == 0 else "Thanks! ###STOP###"}
        opening = next(m["content"] for m in messages if m["role"] == "user" and "this is about task" in m["content"])
        task = by_id[opening.split("task ")[-1].rstrip(".")]
        actions = task.evaluation_criteria.actions
        done = sum(m["role"] == "tool" for m in messages)
        if done < len(actions):
            return {"tool_calls": [tool_call(f"g{done}", actions[done].name, actions[done].arguments)]}
        return {"content": "All done. " + " ".join(task.evaluation_criteria.communicate_info or [])}

    return answer


def test_a_domain_end_to_end_against_a_scripted_openai_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCRIPTED_USER_KEY", "sk-test-user")
    tasks = tau2.load_tasks("retail", limit=1)
    with ScriptedOpenAI(scripted_world(tasks)) as server:
        agent = OpenAICompatiblePolicy(server.url, "scripted-agent", temperature=0.0, max_retries=0)
        user = tau2.UserSimulatorEndpoint("scripted-user", server.url, api_key_env="SCRIPTED_USER_KEY")
        run = tau2.evaluate(agent, "retail", user, limit=1, trials=2)
        requests = list(server.requests)
    assert [(o.task_id, o.trial, o.reward) for o in run.outcomes] == [
        (t.id, trial, 1.0) for trial in range(2) for t in tasks]
    assert (run.domain, run.split, run.tasks, run.trials, run.agent, run.user_model) == (
        "retail", "base", 1, 2, "openai:scripted-agent", "scripted-user")
    assert [(r.metric, r.value, r.k, r.trials, r.user_model) for r in run.results] == [
        ("avg_reward", 1.0, 1, 2, "scripted-user"), ("pass^1", 1.0, 1, 2, "scripted-user"),
        ("pass^2", 1.0, 2, 2, "scripted-user")]
    user_requests = [r for r in requests if r["model"] == "scripted-user"]
    agent_requests = [r for r in requests if r["model"] == "scripted-agent"]
    assert len(user_requests) == 2 * 2  # opening + stop, per trial
    assert len(agent_requests) == 2 * sum(len(t.evaluation_criteria.actions) + 1 for t in tasks)
    assert all(r["tools"] and r["tool_choice"] == "auto" for r in agent_requests)
    assert "sk-test-user" not in json.dumps(run.results[0].as_row())


def test_a_failing_user_endpoint_stops_the_run_with_a_message_naming_it() -> None:
    tasks = tau2.load_tasks("retail", limit=1)
    with ScriptedOpenAI(lambda request: (500, {"error": {"message": "user model down"}})) as server:
        user = tau2.UserSimulatorEndpoint("broken-user", server.url, max_retries=0)
        with pytest.raises(RuntimeError, match="broken-user") as failure:
            tau2.run_simulations(tau2_gold.GoldPolicy(), "retail", tasks, user=user)
    assert server.url in str(failure.value)


def test_a_failing_agent_policy_stops_the_run() -> None:
    class Broken:
        name = "broken"

        def generate(self, requests: Sequence[PolicyRequest]) -> list[Any]:
            raise ConnectionError("policy endpoint unreachable")

    with pytest.raises(tau2.PolicyFailure, match="policy endpoint unreachable"):
        tau2.run_simulations(Broken(), "retail", tau2.load_tasks("retail", limit=2))
