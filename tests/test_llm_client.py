"""The LLM layer's client against a scripted loopback server: the request it sends, bounded
retries, errors naming role/endpoint/model/round, the content-addressed call cache, the
call log and its figures, key redaction, and repair of text a model cannot encode."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest
from support.llm_server import completion

from flywheel_assets.world.llm.accounting import CallLog, call_figures, flat_call_figures
from flywheel_assets.world.llm.cache import InMemoryCallCache, request_hash
from flywheel_assets.world.llm.client import EndpointConfig, EndpointError, LLMClient
from flywheel_assets.world.llm.text import clean_text, redact
from flywheel_assets.world.rollout import run_rollouts
from flywheel_assets.world.synthesis import seed_instances
from flywheel_training.policies.openai_compat import OpenAICompatiblePolicy

KEY_ENV = "FLYWHEEL_TEST_LLM_KEY"
SECRET = "sk-llm-7c2e91-never-print-me"
HELLO = [{"role": "user", "content": "hello"}]


def client_for(url: str, role: str = "user", *, round_key: str = "r007", cache: Any = None, calls: Any = None,
               **kw: Any) -> LLMClient:
    settings = {"max_retries": 2, "backoff_s": 0.01, "timeout": 5.0, "api_key_env": KEY_ENV, **kw}
    return LLMClient(EndpointConfig(role=role, base_url=url, model="sim-model", **settings), cache=cache,
                     calls=calls, round_key=round_key)


def test_the_request_carries_the_role_settings_and_a_stable_seed(serve):
    server = serve(lambda n, body: completion("hi"))
    client = client_for(server.url, temperature=0.3, max_tokens=77, top_p=0.9)
    first = client.complete(HELLO, response_format={"type": "json_object"}, sample=0)
    client.complete(HELLO, response_format={"type": "json_object"}, sample=1)
    client.complete(HELLO, response_format={"type": "json_object"}, sample=0)
    a, b, again = server.bodies
    assert a["model"] == "sim-model" and a["temperature"] == 0.3 and a["max_tokens"] == 77 and a["top_p"] == 0.9
    assert a["response_format"] == {"type": "json_object"} and a["messages"] == HELLO
    assert a["seed"] != b["seed"] and a["seed"] == again["seed"]
    assert first.content == "hi" and first.prompt_tokens == 10 and first.completion_tokens == 5 and not first.cached


@pytest.mark.parametrize("hostile", [
    (500, {"error": {"message": "boom"}}),
    (200, b"{not json"),
    (200, {"choices": []}),
    (200, {"unexpected": True}),
])
def test_a_hostile_endpoint_gets_bounded_retries_then_an_error_naming_role_endpoint_model_round(serve, hostile):
    server = serve(lambda n, body: hostile)
    with pytest.raises(EndpointError) as err:
        client_for(server.url, role="tool", max_retries=2).complete(HELLO)
    assert server.hits == 3
    message = str(err.value)
    assert "tool endpoint" in message and server.url in message and "sim-model" in message and "round r007" in message


def test_a_stalling_endpoint_times_out_with_bounded_retries(serve):
    release = threading.Event()
    server = serve(lambda n, body: (release.wait(5), completion("late"))[1])
    try:
        with pytest.raises(EndpointError, match="Timeout") as err:
            client_for(server.url, role="judge", timeout=0.2, max_retries=1).complete(HELLO)
    finally:
        release.set()
    assert server.hits == 2 and "judge endpoint" in str(err.value)


def test_transient_failures_are_retried_and_client_errors_are_not(serve):
    flaky = serve(lambda n, body: (503, {"error": {"message": "busy"}}) if n <= 2 else completion("ok"))
    assert client_for(flaky.url).complete(HELLO).content == "ok" and flaky.hits == 3
    refusing = serve(lambda n, body: (404, {"error": {"message": "no such model"}}))
    with pytest.raises(EndpointError, match="HTTP 404"):
        client_for(refusing.url).complete(HELLO)
    assert refusing.hits == 1


def test_the_cache_answers_a_repeated_request_without_the_endpoint(serve):
    server = serve(lambda n, body: completion(f"answer {n}"))
    cache, calls = InMemoryCallCache(), CallLog("rollouts")
    first = client_for(server.url, cache=cache, calls=calls).complete(HELLO, sample=2)
    again = client_for(server.url, cache=cache, calls=calls).complete(HELLO, sample=2)  # a new run, same cache
    other = client_for(server.url, cache=cache, calls=calls).complete(HELLO, sample=3)
    assert server.hits == 2 and again.cached and again.message == first.message and other.content == "answer 2"
    rows = calls.rows()
    assert [r["call_index"] for r in rows] == [0, 1, 2] and sum(r["cached"] for r in rows) == 1
    assert set(rows[0]) == {"stage", "call_index", "role", "model", "request_hash", "cached", "prompt_tokens",
                            "completion_tokens", "latency_ms", "error"}
    bypass = client_for(server.url, cache=cache, use_cache=False).complete(HELLO, sample=2)
    assert server.hits == 3 and not bypass.cached


def test_the_request_hash_covers_what_decides_the_answer():
    body = {"model": "m", "messages": HELLO, "temperature": 0.0}
    assert request_hash(body) == request_hash(json.loads(json.dumps(body)))
    assert request_hash(body) != request_hash({**body, "model": "n"})
    assert request_hash(body) != request_hash({**body, "temperature": 0.5})
    assert request_hash(body) != request_hash(body, sample=1) != request_hash(body, attempt=1)


def test_call_figures_per_role():
    calls = CallLog("rollouts")
    for i, latency in enumerate([10.0, 20.0, 30.0, 40.0]):
        calls.record(role="tool", model="m", request_hash=f"h{i}", cached=False, prompt_tokens=5,
                     completion_tokens=2, latency_ms=latency)
    calls.record(role="tool", model="m", request_hash="h9", cached=True, prompt_tokens=5, completion_tokens=2)
    calls.record(role="user", model="m", request_hash="u1", cached=False, error="EndpointError: boom")
    figures = call_figures(calls.rows())
    assert figures["tool"] == {"calls": 5, "cache_hit_rate": 0.2, "prompt_tokens": 25, "completion_tokens": 10,
                               "latency_p50_ms": 20.0, "latency_p95_ms": 40.0, "failures": 0}
    assert figures["user"]["failures"] == 1 and figures["user"]["calls"] == 1
    assert flat_call_figures(calls.rows())["llm_tool_cache_hit_rate"] == 0.2


def test_call_log_rows_come_in_the_same_order_whatever_order_calls_finish():
    orders = [["b", "a", "c"], ["c", "b", "a"]]
    logs = []
    for order in orders:
        calls = CallLog("s")
        for h in order:
            calls.record(role="tool", model="m", request_hash=h, cached=False)
        logs.append([(r["call_index"], r["request_hash"]) for r in calls.rows()])
    assert logs[0] == logs[1] == [(0, "a"), (1, "b"), (2, "c")]


def test_a_key_echoed_by_a_401_never_reaches_messages_or_logs(serve, monkeypatch, caplog, capsys):
    monkeypatch.setenv(KEY_ENV, SECRET)
    caplog.set_level(logging.DEBUG)
    echo = serve(lambda n, body: (401, {"error": {"message": f"invalid key {SECRET}; header was Bearer {SECRET}"}}))
    with pytest.raises(EndpointError) as err:
        client_for(echo.url, role="writer").complete(HELLO)
    assert echo.headers[0]["authorization"] == f"Bearer {SECRET}"  # it was sent...
    assert "HTTP 401" in str(err.value) and "[REDACTED]" in str(err.value)
    assert err.value.__cause__ is None and err.value.__context__ is None  # no chained original to leak it
    # ...and is nowhere in what a run records: the message, logs, output.
    out = capsys.readouterr()
    for text in (str(err.value), repr(err.value), caplog.text, out.out, out.err):
        assert SECRET not in text


def test_the_policy_redacts_an_echoed_key_too(serve, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    echo = serve(lambda n, body: (500, {"error": {"message": f"upstream said: Authorization: Bearer {SECRET}"}}))
    policy = OpenAICompatiblePolicy(echo.url, "m", api_key_env=KEY_ENV, max_retries=1, backoff_s=0.01)
    with pytest.raises(EndpointError) as err:
        policy.complete(HELLO)
    assert SECRET not in str(err.value) and "Bearer [REDACTED]" in str(err.value) and echo.hits == 2


def test_redact_removes_registered_keys_and_bearer_tokens():
    assert redact("token Bearer abc.def-123 end") == "token Bearer [REDACTED] end"
    assert redact("key=s3cr3t-value!", extra=("s3cr3t-value",)) == "key=[REDACTED]!"
    assert redact("EMPTY", extra=("EMPTY",)) == "EMPTY"  # too short to be a key: ordinary words survive


def test_lone_surrogates_are_repaired():
    assert clean_text("hello \ud83d there") == "hello \ufffd there"
    assert clean_text("pair \ud83d\ude00") == "pair \U0001f600"
    assert clean_text("plain") == "plain"


def test_a_reply_with_a_lone_surrogate_is_an_observation_not_a_failed_round(serve):
    """The policy answers "hello \\ud83d there?": the episode records it repaired, and the
    next turn's request is sent (it failed in the client before: issue 11, item 4)."""
    raw = b'{"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [{"index": 0, ' \
          b'"message": {"role": "assistant", "content": "hello \\ud83d there?"}, "finish_reason": "stop"}]}'
    server = serve(lambda n, body: (200, raw))
    instances = seed_instances(["retail"], 1, seed=0, round_key="r000").instances
    policy = OpenAICompatiblePolicy(server.url, "m", max_retries=0, backoff_s=0.01)
    [trajectory] = run_rollouts(instances, policy, max_turns=2)
    assert server.hits == 2  # the second turn was sent
    assert trajectory.messages[2]["content"] == "hello \ufffd there?" and trajectory.turns == 2
    assert server.bodies[1]["messages"][2]["content"] == "hello \ufffd there?"


def test_identical_requests_in_flight_together_share_one_call(serve):
    release = threading.Event()
    server = serve(lambda n, body: (release.wait(5), completion(f"answer {n}"))[1])
    client = client_for(server.url, cache=InMemoryCallCache(), calls=CallLog("rollouts"))
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(client.complete(HELLO))) for _ in range(4)]
    for thread in threads:
        thread.start()
    while server.hits < 1:
        threading.Event().wait(0.01)
    threading.Event().wait(0.2)  # let the others line up behind the first
    release.set()
    for thread in threads:
        thread.join()
    assert server.hits == 1 and {r.content for r in results} == {"answer 1"}
    assert sorted(r.cached for r in results) == [False, True, True, True]
