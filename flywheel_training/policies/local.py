"""A policy backed by a local ``transformers`` model folder, batched across episodes.

Every call of ``generate`` renders all live conversations with the chat template (and the
model's prompt view), sorts them by length so left padding wastes little, and runs
``model.generate`` (KV cache) on batches of them. Output is parsed with
``chat.parse_assistant``; whatever the model writes comes back as a message, so garbage is
an observation for the environment, never an exception.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flywheel_assets.world.rollout import PolicyRequest
from flywheel_assets.world.tasks import stable_id
from flywheel_training.chat import apply_view, parse_assistant, prompt_view, render

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@dataclass
class GenerationSettings:
    """``temperature == 0`` is greedy. With sampling, the random stream is seeded from
    ``seed`` and the batch's conversations (instance, sample index, turn), so a run repeats
    exactly and the samples of one instance differ."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    max_batch_size: int = 32
    max_prompt_tokens: int | None = None  # None: the model's context minus max_new_tokens


class LocalTransformersPolicy:
    def __init__(self, model_path: str | os.PathLike[str], *, name: str | None = None,
                 settings: GenerationSettings | None = None, device: str | None = None,
                 dtype: str | None = None, threads: int | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device == "cuda" else torch.float32)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype).to(device)
        self._setup(model, AutoTokenizer.from_pretrained(model_path), name or f"local:{Path(model_path).name}",
                    settings, str(model_path))

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, *, name: str = "local",
                   settings: GenerationSettings | None = None) -> "LocalTransformersPolicy":
        """A policy over a model already in memory (the one a trainer is updating)."""
        policy = cls.__new__(cls)
        policy._setup(model, tokenizer, name, settings, None)
        return policy

    def _setup(self, model: Any, tokenizer: Any, name: str, settings: GenerationSettings | None,
               model_path: str | None) -> None:
        self.model_path = model_path
        self.name = name
        self.settings = settings or GenerationSettings()
        self.model = model
        self.device = next(model.parameters()).device
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"  # generation continues every row from its last token
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.view = prompt_view(self.tokenizer)
        context = getattr(model.config, "max_position_embeddings", 4096)
        self.max_prompt_tokens = self.settings.max_prompt_tokens or max(64, context - self.settings.max_new_tokens)
        self.stop_ids = self._stop_ids()
        self.generated_tokens = 0  # running totals, for throughput figures
        self.prompt_tokens = 0

    def _stop_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        for token in ("<|im_end|>", "<|endoftext|>"):
            tid = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id:
                ids.add(tid)
        return sorted(i for i in ids if i is not None)

    # --- prompts -------------------------------------------------------------------------
    def prompt_ids(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[int]:
        """Token ids of the generation prompt; over the limit, the oldest turns after the
        system prompt are dropped (a tool result never loses the call it answers)."""
        messages, tools = apply_view(list(messages), tools, self.view)
        ids = self._encode(messages, tools)
        while len(ids) > self.max_prompt_tokens:
            head = 1 if messages and messages[0].get("role") == "system" else 0
            if len(messages) - head <= 1:
                return ids[-self.max_prompt_tokens:]  # one message longer than the context: keep its end
            del messages[head]
            while len(messages) - head > 1 and messages[head].get("role") == "tool":
                del messages[head]
            ids = self._encode(messages, tools)
        return ids

    def _encode(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[int]:
        text = render(self.tokenizer, messages, tools, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # --- generation ----------------------------------------------------------------------
    def generate(self, requests: Sequence[PolicyRequest]) -> list[dict[str, Any]]:
        prompts = [self.prompt_ids(r.messages, r.tools) for r in requests]
        order = sorted(range(len(requests)), key=lambda i: len(prompts[i]))
        texts: list[str] = [""] * len(requests)
        size = max(1, self.settings.max_batch_size)
        for start in range(0, len(order), size):
            chunk = order[start:start + size]
            outputs = self.generate_ids([prompts[i] for i in chunk], [self._seed_key(requests[i]) for i in chunk])
            for i, text in zip(chunk, outputs):
                texts[i] = text
        return [parse_assistant(t, id_prefix=f"call_{len(r.messages)}_") for t, r in zip(texts, requests)]

    def _seed_key(self, request: PolicyRequest) -> str:
        return f"{request.instance.instance_id}/{request.sample}/{len(request.messages)}"

    def generate_ids(self, prompts: list[list[int]], keys: Sequence[str] = ()) -> list[str]:
        """Decoded completions for a batch of prompt token ids (left-padded, one call)."""
        import torch

        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        sampling = self.settings.temperature > 0
        kwargs: dict[str, Any] = {"do_sample": sampling, "max_new_tokens": self.settings.max_new_tokens,
                                  "eos_token_id": self.stop_ids, "pad_token_id": pad}
        if sampling:
            kwargs.update(temperature=self.settings.temperature, top_p=self.settings.top_p, top_k=0)
            seed = int(stable_id("gen", self.settings.seed, list(keys)).split("-")[1][:8], 16)
            torch.manual_seed(seed)
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
        if was_training:
            self.model.train()
        new = out[:, width:]
        self.prompt_tokens += int(attention.sum())
        self.generated_tokens += int((new != pad).sum())
        return self.tokenizer.batch_decode(new, skip_special_tokens=False)
