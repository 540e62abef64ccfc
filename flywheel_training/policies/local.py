"""A policy backed by a local ``transformers`` model folder, batched across episodes.

Every call of ``generate`` renders all live conversations with the chat template (and the
model's prompt view) and runs ``model.generate`` (KV cache) on batches of them. With
``prefix_cache`` (the default for a model loaded from disk), each episode's next turn reuses
the keys and values of the tokens its last turn ran (``prefix_cache.py``), so a turn computes
its new messages only; batches group conversations by how many tokens they still have to
compute, then by length, so padding wastes little. Output is parsed with
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
from flywheel_training.policies.prefix_cache import PrefixCache, plan_batches

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@dataclass
class GenerationSettings:
    """``temperature == 0`` is greedy. With sampling, every conversation draws from its own
    generator, seeded from ``seed`` and the conversation (instance, sample index, turn), so a
    run repeats exactly whatever the batching, and the samples of one instance differ."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    max_batch_size: int = 32
    max_prompt_tokens: int | None = None  # None: the model's context minus max_new_tokens
    prefix_cache: bool = True  # reuse an episode's keys and values from its last turn (fixed weights only)
    prefix_cache_bytes: int = 2 << 30  # at most this much of them kept; episodes beyond it recompute


class LocalTransformersPolicy:
    def __init__(self, model_path: str | os.PathLike[str], *, name: str | None = None,
                 settings: GenerationSettings | None = None, device: str | None = None,
                 dtype: str | None = None, threads: int | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from flywheel_training.attention import use_flywheel_attention

        if threads:
            torch.set_num_threads(threads)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device == "cuda" else torch.float32)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype).to(device)
        use_flywheel_attention(model)
        self._setup(model, AutoTokenizer.from_pretrained(model_path), name or f"local:{Path(model_path).name}",
                    settings, str(model_path))

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, *, name: str = "local",
                   settings: GenerationSettings | None = None) -> "LocalTransformersPolicy":
        """A policy over a model already in memory (the one a trainer is updating). Cached
        keys and values would go stale when the weights change, so the prefix cache is off
        unless ``settings`` asks for it (a policy used only between two updates)."""
        policy = cls.__new__(cls)
        policy._setup(model, tokenizer, name, settings or GenerationSettings(prefix_cache=False), None)
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
        self.cache = PrefixCache(self.settings.prefix_cache_bytes) if self.settings.prefix_cache else None

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
        episodes = [f"{r.instance.instance_id}/{r.sample}" for r in requests]
        if self.cache is not None:
            self.cache.keep_only(episodes)
            needed = [len(p) - self.cache.reusable(e, p) for e, p in zip(episodes, prompts)]
        else:
            needed = [len(p) for p in prompts]
        texts: list[str] = [""] * len(requests)
        for chunk in plan_batches(needed, [len(p) for p in prompts], self.settings.max_batch_size):
            outputs = self.generate_ids([prompts[i] for i in chunk], [self._seed_key(requests[i]) for i in chunk],
                                        episodes=[episodes[i] for i in chunk], fed=max(needed[i] for i in chunk))
            for i, text in zip(chunk, outputs):
                texts[i] = text
        return [parse_assistant(t, id_prefix=f"call_{len(r.messages)}_") for t, r in zip(texts, requests)]

    def _seed_key(self, request: PolicyRequest) -> str:
        return f"{request.instance.instance_id}/{request.sample}/{len(request.messages)}"

    def generate_ids(self, prompts: list[list[int]], keys: Sequence[str] = (), *,
                     episodes: Sequence[str] = (), fed: int | None = None) -> list[str]:
        """Decoded completions for a batch of prompt token ids (left-padded, one call). With
        the prefix cache and ``episodes`` given, every row runs only its last ``fed`` tokens
        and takes the rest from the cache (each row must have them cached)."""
        import torch
        from transformers import LogitsProcessorList

        width = max(len(p) for p in prompts)
        use_cache = self.cache is not None and len(episodes) == len(prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        kwargs: dict[str, Any] = {"do_sample": False, "max_new_tokens": self.settings.max_new_tokens,
                                  "eos_token_id": self.stop_ids, "pad_token_id": pad}
        if self.settings.temperature > 0:
            from flywheel_training.policies.sampling import RowSeededSampler

            seeds = [int(stable_id("gen", self.settings.seed, key).split("-")[1][:8], 16)
                     for key in (keys or [str(row) for row in range(len(prompts))])]
            kwargs["logits_processor"] = LogitsProcessorList([RowSeededSampler(
                seeds, temperature=self.settings.temperature, top_p=self.settings.top_p, device=self.device,
                stop_ids=self.stop_ids)])
        if use_cache:
            kwargs["past_key_values"] = self.cache.past(episodes, prompts, min(width, fed or width), width,
                                                           self.model.config, self.settings.max_new_tokens)
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
        if was_training:
            self.model.train()
        new = out[:, width:]
        if use_cache:
            self.cache.store(episodes, prompts, new, width, kwargs["past_key_values"], self.stop_ids)
        self.prompt_tokens += int(attention.sum())
        self.generated_tokens += int((new != pad).sum())
        return self.tokenizer.batch_decode(new, skip_special_tokens=False)
