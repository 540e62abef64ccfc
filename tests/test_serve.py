"""The local OpenAI-compatible server: the HTTP surface in a child process, and the engine's
batching and sampling in-process."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from flywheel_training.chat import qwen3_training_template
from flywheel_training.serve import Completion, Engine, RequestError, completion_response, serve_in_subprocess
from flywheel_training.tiny import TinyConfig, build_tiny

SMALL = TinyConfig(domains=("retail",), corpus_tasks_per_domain=2, induction_steps=4, recall_steps=4)
"""The embedded architecture with a one-domain tokenizer corpus: builds in seconds."""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny"), SMALL)


@pytest.fixture(scope="module")
def base_url(model_dir: Path):
    with serve_in_subprocess(model_dir, served_name="tiny") as url:
        yield url


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Engine:
    return Engine(model_dir, "tiny")


def post(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def chat(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "tiny", "messages": [{"role": "system", "content": "You help customers."},
                                                          {"role": "user", "content": "Cancel my order please."}],
                            "max_tokens": 12, "temperature": 1.0, "seed": 7}
    body.update(overrides)
    return body


def test_models_lists_the_served_name(base_url: str):
    with urllib.request.urlopen(base_url + "/models", timeout=10) as response:
        listing = json.loads(response.read())
    assert [m["id"] for m in listing["data"]] == ["tiny"]


def test_chat_completion_has_the_standard_shape(base_url: str):
    tools = [{"type": "function", "function": {"name": "cancel_order", "description": "Cancel an order.",
                                               "parameters": {"type": "object",
                                                              "properties": {"order_id": {"type": "string"}}}}}]
    status, body = post(base_url + "/chat/completions", chat(tools=tools, tool_choice="auto"))
    assert status == 200
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length", "tool_calls")
    usage = body["usage"]
    assert 1 <= usage["completion_tokens"] <= 12
    assert usage["prompt_tokens"] > 0 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    if choice["finish_reason"] == "length":
        assert usage["completion_tokens"] == 12


def test_the_seed_decides_the_sample(base_url: str):
    url = base_url + "/chat/completions"
    first, again, other = post(url, chat(seed=1))[1], post(url, chat(seed=1))[1], post(url, chat(seed=2))[1]
    assert first["choices"][0]["message"] == again["choices"][0]["message"]
    assert first["choices"][0]["message"] != other["choices"][0]["message"]


def test_concurrent_requests_all_get_their_own_answer(base_url: str):
    url = base_url + "/chat/completions"
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda s: post(url, chat(seed=s)), range(6)))
    alone = [post(url, chat(seed=s)) for s in range(6)]
    assert all(status == 200 for status, _ in together)
    assert [b["choices"][0]["message"] for _, b in together] == [b["choices"][0]["message"] for _, b in alone]


@pytest.mark.parametrize("body,status,param", [
    (b"{not json", 400, None),
    ([1, 2], 400, None),
    ({"model": "tiny"}, 400, "messages"),
    ({"model": "tiny", "messages": []}, 400, "messages"),
    ({"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages"),
    ({"model": "tiny", "messages": [{"role": "user", "content": {"x": 1}}]}, 400, "messages"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "tools": "all"}, 400, "tools"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "n"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": True}, 400, "stream"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, 400, "temperature"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "seed": 1.5}, 400, "seed"),
    ({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
])
def test_malformed_requests_get_json_errors(base_url: str, body: Any, status: int, param: str | None):
    got, payload = post(base_url + "/chat/completions", body)
    assert got == status
    assert payload["error"]["param"] == param and payload["error"]["message"]


def test_unknown_route_is_404(base_url: str):
    status, payload = post(base_url + "/completions", chat())
    assert status == 404 and "error" in payload


def test_a_prompt_longer_than_the_context_is_refused(engine: Engine):
    too_long = "word " * (SMALL.max_position_embeddings + 10)
    with pytest.raises(RequestError) as err:
        engine.prepare(chat(messages=[{"role": "user", "content": too_long}]))
    assert err.value.status == 400 and "context" in str(err.value)


def test_max_tokens_is_clamped_to_the_room_left_in_the_context(engine: Engine):
    job = engine.prepare(chat(max_tokens=10**9))
    assert len(job.prompt_ids) + job.max_tokens == SMALL.max_position_embeddings


def test_a_batch_gives_each_row_what_it_would_get_alone(engine: Engine):
    # Different prompt lengths, so rows are left-padded differently; mixed temperatures and limits.
    jobs = [engine.prepare(chat(seed=s, max_tokens=m, temperature=t,
                                messages=[{"role": "user", "content": "hello " * (s + 1)}]))
            for s, m, t in [(0, 5, 1.0), (1, 9, 0.0), (2, 7, 0.8)]]
    batched = engine.generate(jobs)
    alone = [engine.generate([job])[0] for job in jobs]
    assert [c.text for c in batched] == [c.text for c in alone]
    for job, c in zip(jobs, batched):
        assert c.completion_tokens <= job.max_tokens
        assert (c.finish_reason == "length") == (c.completion_tokens == job.max_tokens)


def test_tool_calls_in_generated_text_come_back_as_openai_tool_calls():
    text = ('<think>\n\n</think>\n\nChecking.\n<tool_call>\n{"name": "get_order", "arguments": {"order_id": "O-1"}}'
            '\n</tool_call><|im_end|>')
    first = completion_response(Completion(text, 10, 20, "stop"), "tiny")
    second = completion_response(Completion(text, 10, 20, "stop"), "tiny")
    choice = first["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] == "get_order"
    assert json.loads(call["function"]["arguments"]) == {"order_id": "O-1"}
    # Ids stay unique across replies, so tool results in a long conversation match their call.
    assert call["id"] != second["choices"][0]["message"]["tool_calls"][0]["id"]


def test_a_cut_off_tool_call_reports_length():
    body = completion_response(Completion('<tool_call>\n{"name": "get_order", "argu', 10, 8, "length"), "tiny")
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_order"


def test_a_tiny_top_p_keeps_only_the_most_likely_token(engine: Engine):
    nucleus = engine.prepare(chat(temperature=1.0, top_p=1e-6, max_tokens=8, seed=5))
    greedy = engine.prepare(chat(temperature=0.0, max_tokens=8, seed=6))
    assert engine.generate([nucleus])[0].text == engine.generate([greedy])[0].text


PLAIN_CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                "'<|im_end|>\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
"""A template like SmolLM2's: renders no tools and fails on ``content: null``."""


def test_a_model_whose_template_cannot_render_tools_gets_the_projects(model_dir: Path, engine: Engine,
                                                                      tmp_path: Path):
    from transformers import AutoTokenizer

    assert engine.tokenizer.chat_template == AutoTokenizer.from_pretrained(model_dir).chat_template  # kept as is
    plain = tmp_path / "plain"
    shutil.copytree(model_dir, plain)
    tokenizer = AutoTokenizer.from_pretrained(plain)
    tokenizer.chat_template = PLAIN_CHATML
    tokenizer.save_pretrained(plain)
    tools = [{"type": "function", "function": {"name": "get_order", "parameters": {"type": "object", "properties": {}}}}]
    history = chat(tools=tools, messages=[
        {"role": "user", "content": "Where is O-1?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c0", "type": "function", "function": {"name": "get_order", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c0", "content": "{}"}])
    own = Engine(plain, "tiny", chat_template="model")
    with pytest.raises(RequestError) as err:
        own.prepare(history)
    assert err.value.status == 400 and "template" in str(err.value)
    replaced = Engine(plain, "tiny")
    assert replaced.tokenizer.chat_template == qwen3_training_template()
    prompt = replaced.tokenizer.decode(replaced.prepare(history).prompt_ids)
    assert "get_order" in prompt and "<tool_response>" in prompt
