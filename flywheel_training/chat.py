"""The chat format: Qwen3's template and parsing generated text back into messages.

The template is TRL's Qwen3 *training* template, byte for byte: TRL recognises it (tool-call
parsing, prefix preservation, ``{% generation %}`` markers for assistant-only loss), and it
renders tools and tool calls exactly as Qwen3 does, so data made for the embedded model
trains a real Qwen3 checkpoint unchanged.

``parse_assistant`` turns whatever a model generated into an OpenAI assistant message. It
never raises: malformed output is an observation for the environment to answer and the
rubric to score, so a bad tool call stays a tool call (with its raw arguments) whenever
its intent is recognisable.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
TOOL_RESPONSE_OPEN, TOOL_RESPONSE_CLOSE = "<tool_response>", "</tool_response>"
TOOLS_OPEN, TOOLS_CLOSE = "<tools>", "</tools>"
PAD = "<|pad|>"

SPECIAL_TOKENS = [END_OF_TEXT, IM_START, IM_END, PAD]
"""Control tokens: never produced by the pre-tokenizer from ordinary text."""
MARKUP_TOKENS = [TOOL_CALL_OPEN, TOOL_CALL_CLOSE, THINK_OPEN, THINK_CLOSE,
                 TOOL_RESPONSE_OPEN, TOOL_RESPONSE_CLOSE, TOOLS_OPEN, TOOLS_CLOSE]
"""Template markup that is one token each (as in Qwen3's vocabulary) and is kept in decoded text."""


@lru_cache(maxsize=1)
def qwen3_training_template() -> str:
    """TRL's Qwen3 training template, read from the installed TRL package (not copied, so
    it stays identical to what TRL compares against)."""
    return resources.files("trl").joinpath("chat_templates/qwen3_training.jinja").read_text(encoding="utf-8")


_TOOL_CALL_BLOCK = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)(?:" + re.escape(TOOL_CALL_CLOSE) + r"|$)", re.S)
_THINK_BLOCK = re.compile(re.escape(THINK_OPEN) + r".*?" + re.escape(THINK_CLOSE), re.S)
_NAME = re.compile(r'"name"\s*:\s*"((?:[^"\\]|\\.)*)"')
_ARGUMENTS = re.compile(r'"arguments"\s*:\s*(.*)$', re.S)


def _call_id(text: str, prefix: str | None, index: int) -> str:
    # Ids must be unique within a conversation (tool results are matched by id); a caller
    # that knows the turn passes a prefix, otherwise the text's hash keeps it deterministic.
    if prefix is None:
        prefix = "call_" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:8] + "_"
    return f"{prefix}{index}"


def _parse_call_body(body: str) -> tuple[str, str]:
    """(name, arguments JSON string) from the inside of a ``<tool_call>`` block. Arguments
    that are not a JSON object come back as their raw text, so the environment can say so."""
    body = body.strip()
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        obj = None
    if isinstance(obj, dict):
        name = obj.get("name")
        name = name if isinstance(name, str) else ("" if name is None else json.dumps(name))
        if "arguments" not in obj and "parameters" in obj:  # a common variant: same intent
            obj["arguments"] = obj["parameters"]
        arguments = obj.get("arguments", {})
        if arguments is None:
            arguments = {}
        return name, arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    # Not parseable as a whole: salvage the name and pass the arguments on raw.
    name_match = _NAME.search(body)
    args_match = _ARGUMENTS.search(body)
    raw_args = args_match.group(1).strip() if args_match else body
    if args_match and raw_args.endswith("}"):
        raw_args = raw_args[:-1].rstrip()  # the closing brace of the outer object
    if raw_args == "":
        raw_args = body  # never pass an empty string: it would read as "no arguments"
    name = json.loads(f'"{name_match.group(1)}"') if name_match and _valid_json_string(name_match.group(1)) else (
        name_match.group(1) if name_match else "")
    return name, raw_args


def _valid_json_string(inner: str) -> bool:
    try:
        json.loads(f'"{inner}"')
        return True
    except ValueError:
        return False


def parse_assistant(text: str, *, id_prefix: str | None = None) -> dict[str, Any]:
    """An OpenAI assistant message from generated text (Qwen3 ``<tool_call>`` format).

    ``<think>`` blocks and the end-of-turn token (and anything after it) are dropped;
    each ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` becomes an entry of
    ``tool_calls`` whose ``arguments`` is a JSON string; the remaining text is ``content``
    (``None`` when only tool calls remain). A block cut off by the token limit or holding
    invalid JSON is still a tool call, with whatever name could be read and the raw
    arguments text. Never raises.
    """
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    for stop in (IM_END, END_OF_TEXT):
        cut = text.find(stop)
        if cut != -1:
            text = text[:cut]
    text = _THINK_BLOCK.sub("", text)
    if THINK_CLOSE in text:  # the opening tag was in the prompt (generation prompt prefilled it)
        text = text.split(THINK_CLOSE, 1)[1]
    text = text.replace(THINK_OPEN, "")
    tool_calls: list[dict[str, Any]] = []
    for index, match in enumerate(_TOOL_CALL_BLOCK.finditer(text)):
        name, arguments = _parse_call_body(match.group(1))
        tool_calls.append({"id": _call_id(text, id_prefix, index), "type": "function",
                           "function": {"name": name, "arguments": arguments}})
    content = _TOOL_CALL_BLOCK.sub("", text).replace(TOOL_CALL_CLOSE, "").strip()
    message: dict[str, Any] = {"role": "assistant", "content": content or (None if tool_calls else "")}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def arguments_as_json_strings(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``messages`` whose tool-call arguments are JSON strings (Arrow would
    otherwise merge the argument dicts of different tools and add ``null`` keys)."""
    out = []
    for m in messages:
        m = dict(m)
        if m.get("tool_calls"):
            calls = []
            for call in m["tool_calls"]:
                function = dict(call.get("function") or {})
                if not isinstance(function.get("arguments"), str):
                    function["arguments"] = json.dumps(function.get("arguments") or {}, ensure_ascii=False)
                calls.append({"id": call.get("id", ""), "type": "function", "function": function})
            m["tool_calls"] = calls
        out.append(m)
    return out


def render(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
           *, add_generation_prompt: bool = False) -> str:
    """The prompt text for ``messages``. With a generation prompt, the empty think block
    the training template puts in every assistant turn is prefilled (``enable_thinking=False``),
    so the model starts where its training targets start."""
    return tokenizer.apply_chat_template(arguments_as_json_strings(messages), tools=tools or None, tokenize=False,
                                         add_generation_prompt=add_generation_prompt, enable_thinking=False)


PROMPT_VIEWS = ("full", "compact")
VIEW_KEY = "flywheel_prompt_view"
"""Saved in ``tokenizer_config.json``: how prompts are shown to this model. It travels with
the tokenizer, so every checkpoint trained from a base sees prompts the way the base did."""


def prompt_view(tokenizer: Any) -> str:
    view = getattr(tokenizer, "init_kwargs", {}).get(VIEW_KEY, "full")
    return view if view in PROMPT_VIEWS else "full"


def compact_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool schema reduced to its name and argument types: a tiny model learns what the
    tools do from demonstrations, and every prompt token costs it attention on CPU."""
    function = tool.get("function", tool) if isinstance(tool, dict) else {}
    params = (function.get("parameters") or {}).get("properties") or {}
    return {"name": function.get("name", ""),
            "parameters": {k: (v.get("type", "any") if isinstance(v, dict) else "any") for k, v in params.items()}}


def compact_system(text: str) -> str:
    """The first sentence of a system prompt (who the agent is), without the written policy."""
    match = re.match(r"(.+?[.!?])(\s|$)", text.strip(), re.S)
    return match.group(1) if match else text.strip()


def apply_view(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, view: str
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages and tools as a model with ``view`` sees them. ``full`` is unchanged;
    ``compact`` (the embedded model) shortens the leading system prompt and the tool schemas."""
    if view != "compact":
        return messages, tools
    out = list(messages)
    if out and out[0].get("role") == "system" and isinstance(out[0].get("content"), str):
        out[0] = {**out[0], "content": compact_system(out[0]["content"])}
    return out, [compact_tool(t) for t in tools] if tools else tools
