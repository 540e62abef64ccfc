"""Prefix caching for multi-turn episodes: keys and values kept from an episode's last turn.

Turn t of an episode sends the whole conversation again, of which all but the newest
messages were already run through the model at turn t-1. Like vLLM's automatic prefix
caching, each episode keeps the keys and values of the tokens it last ran, and the next
prompt reuses them for its longest common token prefix with them: only the rest is
computed. Reuse is decided by token ids alone, so a conversation that was re-rendered
differently or truncated reuses less, never wrong values. The values are a function of the
weights: a cache belongs to one policy over fixed weights.

A batch keeps every row contiguous and left-padded, as plain batched generation does: the
rows of a batch all feed their last ``N`` tokens (``N``: the largest count of tokens any row
has to compute) and take the tokens before those from the cache, right-aligned in a
``DynamicCache`` whose missing places are masked. Contiguous rows keep the first layer's
sliding window, which counts columns, exactly as in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer


@dataclass
class CachedPrefix:
    tokens: list[int]  # the tokens whose keys and values ``layers`` hold, in order
    layers: list[tuple[Any, Any]]  # per layer: keys and values, each (kv_heads, len(tokens), head_dim)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PrefixCache:
    """Per-episode cached prefixes, reused by longest common token prefix, within
    ``max_bytes`` of keys and values: an episode that does not fit is not kept, and its next
    turn computes its whole prompt (a 135M model holds ~46 KB a token, the embedded one 2 KB)."""

    def __init__(self, max_bytes: int = 2 << 30) -> None:
        self.entries: dict[str, CachedPrefix] = {}
        self.max_bytes = max_bytes
        self.reused_tokens = 0  # running total of prompt tokens not recomputed
        self.skipped = 0  # running total of episode turns not kept for want of room

    def held_bytes(self) -> int:
        return sum(_entry_bytes(e) for e in self.entries.values())

    def reusable(self, key: str, prompt: Sequence[int]) -> int:
        """How many leading tokens of ``prompt`` the cache holds (at most all but the last:
        generation needs one token to run)."""
        entry = self.entries.get(key)
        if entry is None:
            return 0
        return min(common_prefix(entry.tokens, prompt), len(prompt) - 1)

    def keep_only(self, keys: Sequence[str]) -> None:
        """Forget episodes that are no longer live (bounds memory to the live batch)."""
        live = set(keys)
        for key in [k for k in self.entries if k not in live]:
            del self.entries[key]

    def past(self, keys: Sequence[str], prompts: Sequence[Sequence[int]], fed: int, width: int, config: Any,
             max_new_tokens: int) -> DynamicCache:
        """A cache for ``config``'s layers with every row's first ``len(prompt) - fed``
        tokens, right-aligned in ``width - fed`` places (left places zero; the attention mask
        hides them), with room for ``max_new_tokens`` more."""
        past = _generation_cache(config, width + max_new_tokens)
        cached = width - fed
        if cached <= 0:
            return past
        first = next(self.entries[k] for k, p in zip(keys, prompts) if len(p) > fed)
        for layer, (k0, v0) in enumerate(first.layers):
            keys_t = k0.new_zeros((len(prompts), k0.shape[0], cached, k0.shape[2]))
            values_t = v0.new_zeros((len(prompts), v0.shape[0], cached, v0.shape[2]))
            for row, (key, prompt) in enumerate(zip(keys, prompts)):
                used = len(prompt) - fed
                if used > 0:
                    k, v = self.entries[key].layers[layer]
                    keys_t[row, :, cached - used:] = k[:, :used]
                    values_t[row, :, cached - used:] = v[:, :used]
            past.layers[layer].update(keys_t, values_t)
        self.reused_tokens += sum(max(0, len(p) - fed) for p in prompts)
        return past

    def store(self, keys: Sequence[str], prompts: Sequence[Sequence[int]], generated: Any, width: int,
              past: Any, stop_ids: Sequence[int]) -> None:
        """Keep each row's prompt and generated tokens (to its stop token) with their keys and
        values, as ``past`` holds them after generation."""
        states = [layer.all_states() for layer in past.layers]
        length = states[0][0].shape[2]  # the last sampled token was never run
        per_token = sum(2 * k.shape[1] * k.shape[3] * k.element_size() for k, _ in states)
        for key in keys:
            self.entries.pop(key, None)  # superseded by this turn's, if it fits
        held = self.held_bytes()
        stops = set(stop_ids)
        for row, (key, prompt) in enumerate(zip(keys, prompts)):
            new: list[int] = []
            for token in generated[row].tolist():
                new.append(token)
                if token in stops:
                    break
            new = new[:max(0, length - width)]
            start, end = width - len(prompt), width + len(new)
            if held + per_token * (end - start) > self.max_bytes:
                self.skipped += 1
                continue
            held += per_token * (end - start)
            self.entries[key] = CachedPrefix(
                list(prompt) + new, [(k[row, :, start:end].clone(), v[row, :, start:end].clone()) for k, v in states])


def _entry_bytes(entry: CachedPrefix) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in entry.layers)


class _RecordingSlidingLayer(DynamicSlidingWindowLayer):
    """A sliding-window layer that also keeps every state it is given: attention still reads
    only the window, and the whole episode can be read back afterwards."""

    def __init__(self, sliding_window: int):
        super().__init__(sliding_window)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        self.seen.append((key_states, value_states))
        return super().update(key_states, value_states, *args, **kwargs)

    def all_states(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([k for k, _ in self.seen], dim=-2), torch.cat([v for _, v in self.seen], dim=-2)


class _PreallocatedLayer(DynamicLayer):
    """A full-attention layer written into a buffer sized for the whole generation
    (``capacity``: the cached prefix, the prompt and every new token): ``DynamicLayer``
    concatenates the whole cache once per generated token."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        end = self.length + key_states.shape[-2]
        if not self.is_initialized:
            self.dtype, self.device = key_states.dtype, key_states.device
            shape = (*key_states.shape[:2], max(self.capacity, end), key_states.shape[-1])
            self.buffer_keys = key_states.new_zeros(shape)
            self.buffer_values = value_states.new_zeros(shape)
            self.is_initialized = True
        self.buffer_keys[:, :, self.length:end] = key_states
        self.buffer_values[:, :, self.length:end] = value_states
        self.length = end
        self.keys = self.buffer_keys[:, :, :end]
        self.values = self.buffer_values[:, :, :end]
        return self.keys, self.values

    def all_states(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.keys, self.values


def _generation_cache(config: Any, capacity: int) -> DynamicCache:
    """``config``'s layer kinds, each able to give back every state it saw."""
    past = DynamicCache(config=config)
    past.layers = [_RecordingSlidingLayer(layer.sliding_window) if isinstance(layer, DynamicSlidingWindowLayer)
                   else _PreallocatedLayer(capacity) for layer in past.layers]
    return past


def plan_batches(needed: Sequence[int], lengths: Sequence[int], size: int) -> list[list[int]]:
    """Rows grouped into batches of at most ``size``, ordered by how many tokens each must
    compute and then by length, so a batch's rows feed about as many tokens as they need."""
    order = sorted(range(len(needed)), key=lambda i: (needed[i], lengths[i]))
    return [order[start:start + size] for start in range(0, len(order), max(1, size))]
