"""The chat format: parsing generated text into assistant messages, rendering with the
Qwen3 training template, and the round trip between the two."""

from __future__ import annotations

import json

import pytest

from flywheel_assets.world.rollout import normalize_assistant
from flywheel_training.chat import parse_assistant, qwen3_training_template, render


def test_plain_text_is_content():
    msg = parse_assistant("Could you tell me your email?<|im_end|>")
    assert msg == {"role": "assistant", "content": "Could you tell me your email?"}


def test_think_block_and_trailing_tokens_are_dropped():
    msg = parse_assistant("<think>\nplan\n</think>\n\nHello there.<|im_end|>\n<|im_start|>user\nhi")
    assert msg["content"] == "Hello there."
    # The generation prompt may prefill "<think>", leaving only its close in the output.
    assert parse_assistant("\n</think>\n\nHi.")["content"] == "Hi."


def test_tool_calls_become_openai_calls_with_json_string_arguments():
    text = ('<think>\n\n</think>\n\n<tool_call>\n{"name": "find_user", "arguments": {"email": "a.b@x.com"}}\n'
            '</tool_call>\n<tool_call>\n{"name": "get_order", "arguments": {"order_id": "O-12"}}\n</tool_call><|im_end|>')
    msg = parse_assistant(text, id_prefix="call_3_")
    assert msg["content"] is None
    assert [c["function"]["name"] for c in msg["tool_calls"]] == ["find_user", "get_order"]
    assert [c["id"] for c in msg["tool_calls"]] == ["call_3_0", "call_3_1"]
    assert all(c["type"] == "function" for c in msg["tool_calls"])
    assert json.loads(msg["tool_calls"][0]["function"]["arguments"]) == {"email": "a.b@x.com"}


def test_content_beside_a_tool_call_is_kept():
    msg = parse_assistant('Let me check.\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>')
    assert msg["content"] == "Let me check."
    assert msg["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}


def test_default_ids_are_deterministic_and_distinct_within_a_message():
    text = '<tool_call>{"name": "f", "arguments": {}}</tool_call><tool_call>{"name": "f", "arguments": {}}</tool_call>'
    a, b = parse_assistant(text), parse_assistant(text)
    assert [c["id"] for c in a["tool_calls"]] == [c["id"] for c in b["tool_calls"]]
    assert len({c["id"] for c in a["tool_calls"]}) == 2


@pytest.mark.parametrize("text", [
    '<tool_call>\n{"name": "find_user", "arguments": {"email": "a@b.com"\n</tool_call>',  # unbalanced
    '<tool_call>\n{"name": "find_user", "arguments": {"email": "a@b.com"}',  # cut off by the token limit
    '<tool_call>\n{"name": "find_user", "arguments": {email: a@b.com}}\n</tool_call>',  # not JSON
])
def test_malformed_json_stays_a_tool_call_the_environment_rejects(text):
    msg = parse_assistant(text)
    call = msg["tool_calls"][0]
    assert call["function"]["name"] == "find_user"
    _, parsed = normalize_assistant(msg, 1)
    assert parsed[0].problem == "arguments are not valid JSON"


@pytest.mark.parametrize("text", [
    "", "<tool_call></tool_call>", "<tool_call>", "</tool_call>", "<think>", "<think>unfinished",
    '<tool_call>{"arguments": {}}</tool_call>', '<tool_call>[1, 2]</tool_call>',
    '<tool_call>{"name": 7, "arguments": [1]}</tool_call>', "\x00\ud800" * 3, "{" * 5000, None,
])
def test_garbage_never_raises_and_normalizes(text):
    msg = parse_assistant(text)
    assert msg["role"] == "assistant"
    message, calls = normalize_assistant(msg, 1)  # the environment accepts whatever came back
    assert message["role"] == "assistant"
    for call in calls:
        assert call.problem is not None or isinstance(call.arguments, dict)


def test_non_object_arguments_are_reported_not_dropped():
    msg = parse_assistant('<tool_call>{"name": "f", "arguments": [1]}</tool_call>')
    _, calls = normalize_assistant(msg, 1)
    assert calls[0].problem == "arguments must be a JSON object"


def test_template_is_trls_qwen3_training_template():
    from trl.chat_template_utils import qwen3_training_chat_template

    assert qwen3_training_template() == qwen3_training_chat_template


def test_render_and_parse_round_trip(tiny_tokenizer):
    tools = [{"type": "function", "function": {"name": "find_user", "description": "Find a user.",
                                               "parameters": {"type": "object", "properties": {
                                                   "email": {"type": "string"}}, "required": ["email"]}}}]
    call = {"id": "call_0", "type": "function",
            "function": {"name": "find_user", "arguments": json.dumps({"email": "jo.kim@example.com"})}}
    messages = [{"role": "system", "content": "You are an agent."},
                {"role": "user", "content": "Find me, jo.kim@example.com"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_0", "name": "find_user", "content": '{"user_id": "U-1"}'},
                {"role": "assistant", "content": "Found you."}]
    text = render(tiny_tokenizer, messages, tools)
    assert '"name": "find_user"' in text and "<tools>" in text and "<tool_response>" in text
    assert '<tool_call>\n{"name": "find_user", "arguments": {"email": "jo.kim@example.com"}}\n</tool_call>' in text
    # Parse the first assistant turn back out of the rendered text.
    turn = text.split("<|im_start|>assistant\n")[1]
    parsed = parse_assistant(turn)
    assert parsed["tool_calls"][0]["function"]["name"] == "find_user"
    assert json.loads(parsed["tool_calls"][0]["function"]["arguments"]) == {"email": "jo.kim@example.com"}
    prompt = render(tiny_tokenizer, messages[:2], tools, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    # The prompt is a prefix of the full conversation: what the model sees at generation
    # time is what it was trained on.
    assert text.startswith(prompt)


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from flywheel_training.tiny import TinyConfig, build_tokenizer

    return build_tokenizer(TinyConfig(vocab_size=768, corpus_tasks_per_domain=1, prompt_view="full"))
