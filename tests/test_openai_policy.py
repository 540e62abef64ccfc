"""The OpenAI-compatible policy: real episodes against the local server in a child process,
and retries, errors, request contents and key handling against scripted loopback servers."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flywheel_assets.world.rollout import PolicyRequest, run_rollouts
from flywheel_assets.world.synthesis import seed_instances
from flywheel_training.policies.openai_compat import EndpointError, OpenAICompatiblePolicy
from flywheel_training.serve import free_port, serve_in_subprocess
from flywheel_training.tiny import TinyConfig, build_tiny
from support.llm_server import Reply, ScriptedServer

SECRET = "sk-test-4f1d9c-do-not-log"
KEY_ENV = "FLYWHEEL_TEST_POLICY_KEY"


@pytest.fixture(scope="module")
def instances():
    return seed_instances(["retail"], 2, seed=0, round_key="r000").instances


# --- against the real server ---------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tiny model behind the local server, which demands the key held in KEY_ENV."""
    model = build_tiny(tmp_path_factory.mktemp("tiny"), TinyConfig(domains=("retail",), corpus_tasks_per_domain=2,
                                                                     induction_steps=4, recall_steps=4))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, SECRET)  # the child inherits it
        with serve_in_subprocess(model, served_name="tiny", api_key_env=KEY_ENV) as url:
            yield url


def test_episodes_complete_against_the_served_model(served: str, instances, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    policy = OpenAICompatiblePolicy(served, "tiny", api_key_env=KEY_ENV, temperature=1.0, max_tokens=16,
                                    concurrency=4, max_retries=1, backoff_s=0.05)
    trajectories = run_rollouts(instances, policy, samples=2, max_turns=3)
    assert len(trajectories) == 4
    assert "tiny" in policy.name
    for t in trajectories:
        assert t.policy == policy.name and t.termination in ("max_turns", "user_stop", "transfer")
        assistant = [m for m in t.messages if m["role"] == "assistant"]
        assert len(assistant) == t.turns >= 1
    # Per-sample seeds: the two rollouts of an instance do not say the same thing.
    by_instance: dict[str, list[Any]] = {}
    for t in trajectories:
        by_instance.setdefault(t.instance_id, []).append(next(m for m in t.messages if m["role"] == "assistant"))
    assert all(first != second for first, second in by_instance.values())


def test_a_wrong_key_fails_at_once_naming_the_endpoint(served: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    policy = OpenAICompatiblePolicy(served, "tiny", api_key_env=KEY_ENV, max_retries=3, backoff_s=5.0)
    with pytest.raises(EndpointError, match="401") as err:
        policy.complete([{"role": "user", "content": "hi"}])
    assert served in str(err.value) and "tiny" in str(err.value)


def test_a_conversation_over_the_context_ends_its_episode_not_the_batch(served: str, instances,
                                                                        monkeypatch: pytest.MonkeyPatch):
    """The server answers 400 "maximum context length" for one episode; that episode ends
    with termination context_length (a gate failure) while the other one plays on."""
    from flywheel_assets.world.domains import get_domain
    from flywheel_assets.world.rollout import ContextExhausted, Episode, make_caches
    from flywheel_assets.world.rubric import score
    from flywheel_assets.world.users import ProceduralUser

    monkeypatch.setenv(KEY_ENV, SECRET)
    policy = OpenAICompatiblePolicy(served, "tiny", api_key_env=KEY_ENV, max_tokens=8, max_retries=2, backoff_s=5.0)
    domain = get_domain("retail")
    caches = make_caches(instances)
    episodes = [Episode(inst, domain, caches[inst.instance_id].session(), ProceduralUser(inst, domain), 5)
                for inst in instances]
    episodes[0].messages.append({"role": "user", "content": "my order " * 8000})  # far past 6,144 tokens
    tools = [s.openai_schema() for s in domain.tool_specs]
    replies = policy.generate([PolicyRequest(e.messages, tools, e.instance) for e in episodes])
    assert isinstance(replies[0], ContextExhausted) and "context length" in replies[0].detail
    assert replies[1]["role"] == "assistant"
    for episode, reply in zip(episodes, replies):
        episode.step(reply)
    assert episodes[0].termination == "context_length" and episodes[0].turns == 0
    assert episodes[1].turns == 1 and episodes[1].termination != "context_length"
    result = score(instances[0], episodes[0].trajectory(policy.name))
    assert result.reward == 0 and not result.success


# --- against scripted loopback servers -----------------------------------------------------

# the loopback server whose every answer comes from respond(request_number, body)
Scripted = ScriptedServer


@pytest.fixture
def scripted(serve: Callable[..., Scripted]) -> Callable[..., Scripted]:
    return serve  # conftest's scripted loopback servers, under this file's name


def ok(message: dict[str, Any] | None = None) -> Reply:
    message = message or {"role": "assistant", "content": "Could you tell me your order id?"}
    return 200, {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
                 "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def policy_for(url: str, **kw: Any) -> OpenAICompatiblePolicy:
    kw = {"max_retries": 2, "backoff_s": 0.01, "timeout": 10.0, **kw}
    return OpenAICompatiblePolicy(url, "test-model", **kw)


def request(messages: list[dict[str, Any]] | None = None, sample: int = 0, instance: Any = None) -> PolicyRequest:
    tools = [{"type": "function", "function": {"name": "get_order", "parameters": {"type": "object",
                                                                                   "properties": {}}}}]
    return PolicyRequest(messages or [{"role": "user", "content": "hi"}], tools, instance, sample)


def test_server_errors_are_retried_then_fail_naming_the_endpoint(scripted):
    server = scripted(lambda n, body: (500, {"error": {"message": "boom"}}))
    with pytest.raises(RuntimeError) as err:
        policy_for(server.url).generate([request()])
    assert server.url in str(err.value) and "test-model" in str(err.value)
    assert server.hits == 3  # one try and max_retries=2 retries


def test_a_transient_failure_is_retried_until_it_works(scripted):
    server = scripted(lambda n, body: (503, {"error": {"message": "busy"}}) if n <= 2 else ok())
    [message] = policy_for(server.url).generate([request()])
    assert message == {"role": "assistant", "content": "Could you tell me your order id?"}
    assert server.hits == 3


@pytest.mark.parametrize("garbage", [b"<html>bad gateway</html>", {"unexpected": True}, {"choices": []}])
def test_garbage_responses_are_retried_then_fail(scripted, garbage):
    server = scripted(lambda n, body: (200, garbage))
    with pytest.raises(EndpointError, match="test-model"):
        policy_for(server.url, max_retries=1).generate([request()])
    assert server.hits == 2


def test_a_timeout_is_retried_then_fails(scripted):
    release = threading.Event()
    server = scripted(lambda n, body: (release.wait(5), ok())[1])
    try:
        with pytest.raises(EndpointError, match="Timeout"):
            policy_for(server.url, timeout=0.2, max_retries=1).generate([request()])
    finally:
        release.set()
    assert server.hits == 2


def test_a_closed_port_fails_naming_the_endpoint():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EndpointError) as err:
        policy_for(url, max_retries=1).generate([request()])
    assert url in str(err.value) and "test-model" in str(err.value)


def test_client_errors_are_not_retried(scripted):
    server = scripted(lambda n, body: (404, {"error": {"message": "no such model"}}))
    with pytest.raises(EndpointError, match="HTTP 404"):
        policy_for(server.url).generate([request()])
    assert server.hits == 1


def test_the_request_carries_tools_seeds_and_clean_messages(scripted):
    server = scripted(lambda n, body: ok())
    conversation = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_order", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "name": "get_order", "content": "{\"ok\": true}"},
        {"role": "assistant", "content": None},
    ]
    policy = policy_for(server.url, temperature=0.9, max_tokens=64, seed=3, concurrency=1)  # arrival order
    policy.generate([request(conversation, sample=0), request(conversation, sample=1)])
    policy.generate([request(conversation, sample=0)])
    first, second, again = server.bodies
    assert first["model"] == "test-model" and first["tool_choice"] == "auto"
    assert first["tools"][0]["function"]["name"] == "get_order"
    assert first["temperature"] == 0.9 and first["max_tokens"] == 64
    assert first["seed"] != second["seed"] and first["seed"] == again["seed"]
    sent = first["messages"]
    assert sent[3] == {"role": "tool", "tool_call_id": "c1", "content": "{\"ok\": true}"}
    assert sent[2]["tool_calls"][0]["function"] == {"name": "get_order", "arguments": "{}"}
    assert sent[4] == {"role": "assistant", "content": ""}


def test_tool_calls_come_back_with_json_string_arguments(scripted):
    call = {"id": "call_9", "type": "function", "function": {"name": "get_order", "arguments": "{\"order_id\": \"O-1\"}"}}
    server = scripted(lambda n, body: ok({"role": "assistant", "content": None, "tool_calls": [call]}))
    [message] = policy_for(server.url).generate([request()])
    assert message == {"role": "assistant", "content": None, "tool_calls": [call]}


def test_malformed_model_output_is_returned_not_raised(scripted):
    call = {"id": "x", "type": "function", "function": {"name": "no_such_tool", "arguments": "{not json"}}
    server = scripted(lambda n, body: ok({"role": "assistant", "content": None, "tool_calls": [call]}))
    [message] = policy_for(server.url).generate([request()])
    assert message["tool_calls"][0]["function"]["arguments"] == "{not json"


def test_requests_of_a_batch_are_sent_concurrently(scripted):
    # Every handler waits until four requests are in flight at once; sent one at a time,
    # the barrier would break and the replies would be errors.
    barrier = threading.Barrier(4, timeout=10)

    def respond(n: int, body: dict[str, Any]) -> Reply:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return 400, {"error": {"message": "not concurrent"}}
        return ok({"role": "assistant", "content": body["messages"][-1]["content"]})

    server = scripted(respond)
    replies = policy_for(server.url, concurrency=4).generate(
        [request([{"role": "user", "content": f"q{i}"}]) for i in range(4)])
    assert [r["content"] for r in replies] == ["q0", "q1", "q2", "q3"]  # in request order


def test_the_key_comes_from_the_env_and_is_never_shown(scripted, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    caplog.set_level(logging.DEBUG)  # every logger, the openai client's and httpx's included
    server = scripted(lambda n, body: ok() if n == 1 else (500, {"error": {"message": "boom"}}))
    policy = policy_for(server.url, api_key_env=KEY_ENV, max_retries=1)
    policy.generate([request()])
    with pytest.raises(EndpointError) as err:
        policy.generate([request()])
    assert all(h["authorization"] == f"Bearer {SECRET}" for h in server.headers)
    assert SECRET not in repr(policy) and SECRET not in str(policy) and KEY_ENV in repr(policy)
    assert SECRET not in str(err.value)
    assert SECRET not in caplog.text and "retrying" in caplog.text


def test_without_a_key_a_placeholder_is_sent(scripted, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    server = scripted(lambda n, body: ok())
    policy_for(server.url, api_key_env=KEY_ENV).generate([request()])
    assert server.headers[0]["authorization"] == "Bearer EMPTY"


# --- in-process vLLM -----------------------------------------------------------------------

def test_vllm_policy_without_vllm_says_how_to_install_it(monkeypatch, tmp_path: Path):
    from flywheel_training.policies.vllm_inproc import VLLMPolicy

    monkeypatch.setitem(sys.modules, "vllm", None)  # absent even where it is installed
    with pytest.raises(ImportError, match=r"pip install -e '\.\[gpu\]'"):
        VLLMPolicy(tmp_path)


def test_the_policy_shares_the_call_cache_and_log_and_names_its_role(scripted):
    from flywheel_assets.world.llm.accounting import CallLog
    from flywheel_assets.world.llm.cache import InMemoryCallCache

    server = scripted(lambda n, body: ok() if n <= 2 else (500, {"error": {"message": "boom"}}))
    cache, calls = InMemoryCallCache(), CallLog("rollouts")
    teacher = policy_for(server.url, role="teacher", max_retries=0).bind(cache=cache, calls=calls, round_key="r003")
    batch = [request(sample=0), request(sample=1)]
    first = teacher.generate(batch)
    assert server.hits == 2
    assert teacher.generate(batch) == first and server.hits == 2  # answered from the cache
    assert [r["role"] for r in calls.rows()] == ["teacher"] * 4 and sum(r["cached"] for r in calls.rows()) == 2
    with pytest.raises(EndpointError) as err:
        teacher.generate([request(sample=5)])
    assert "teacher endpoint" in str(err.value) and "round r003" in str(err.value)
