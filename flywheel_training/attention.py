"""The attention the embedded model runs on CPU: PyTorch's SDPA, given shapes it is fast on.

``transformers``' ``sdpa`` implementation passes every batch with padding as a dense boolean
mask, which keeps CPU SDPA on its math kernel, and for grouped-query models it first copies
every key and value once per query head group (``repeat_kv``). For the embedded model that
costs most of a training step and of a decode step. This implementation (registered as
``flywheel_sdpa``, mask format as ``sdpa``) computes the same attention:

- grouped-query heads go to SDPA as they are (``enable_gqa``), never copied;
- a sliding-window layer over a whole sequence (training, a prompt's prefill) attends within
  its window only: each query's ``sliding_window`` keys are gathered (a strided view, no copy)
  instead of masking an L x L score matrix;
- a full layer over right-padded sequences (a training batch) runs SDPA's causal kernel
  without the mask: a real token never sees a pad after it, and what pad positions compute
  is never read (their labels are ignored);
- anything else (decoding against a cache, left padding) is SDPA with the mask.

Real positions get the same values as masked SDPA up to float rounding (tests/test_attention.py).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

ATTENTION = "flywheel_sdpa"


def use_flywheel_attention(model: Any) -> None:
    """Switch a loaded model to ``flywheel_sdpa`` (registered on first use). The choice is
    not written into saved checkpoints, which load anywhere with the default attention."""
    if ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTENTION, attention_forward)
        ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)
    model.set_attn_implementation(ATTENTION)


def attention_forward(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                      sliding_window: int | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """``transformers`` attention interface: (batch, heads, length, head_dim) in, (batch,
    length, heads, head_dim) out."""
    length = query.shape[2]
    whole_sequence = length > 1 and key.shape[2] == length and dropout == 0.0
    if whole_sequence:
        valid = _real_keys(attention_mask, query)
        if sliding_window and sliding_window < length:
            out = windowed_attention(query, key, value, valid, sliding_window, scaling)
            return out.transpose(1, 2).contiguous(), None
        if valid is None or _right_padded(valid):
            attention_mask = None
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling,
        is_causal=attention_mask is None and whole_sequence, enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2).contiguous(), None


def windowed_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, valid: torch.Tensor | None,
                       window: int, scaling: float | None) -> torch.Tensor:
    """Causal attention of each position over the ``window`` positions ending at it (itself
    included), skipping keys where ``valid`` (batch, length) is False."""
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    # (batch, kv_heads, length, dim, window): position i's keys i-window+1 .. i, zeros before the start
    keys = torch.nn.functional.pad(key, (0, 0, window - 1, 0)).unfold(2, window, 1)
    values = torch.nn.functional.pad(value, (0, 0, window - 1, 0)).unfold(2, window, 1)
    grouped = query.view(batch, kv_heads, heads // kv_heads, length, dim)
    scores = torch.einsum("bkgld,bkldw->bkglw", grouped, keys) * (scaling if scaling is not None else dim ** -0.5)
    if valid is None:
        valid = torch.ones(batch, length, dtype=torch.bool, device=query.device)
    in_window = torch.nn.functional.pad(valid, (window - 1, 0), value=False).unfold(1, window, 1)
    # a finite floor, not -inf: a pad position with no real key in its window stays finite
    scores = scores.masked_fill(~in_window[:, None, None], torch.finfo(scores.dtype).min)
    out = torch.einsum("bkglw,bkldw->bkgld", scores.softmax(-1), values)
    return out.reshape(batch, heads, length, dim)


def _real_keys(attention_mask: torch.Tensor | None, query: torch.Tensor) -> torch.Tensor | None:
    """(batch, length): True where a position is a real token. A real token attends to
    itself and a pad is hidden from everyone, so the mask's diagonal says which is which."""
    if attention_mask is None:
        return None
    diagonal = torch.diagonal(attention_mask[:, 0], dim1=-2, dim2=-1)
    valid = diagonal if diagonal.dtype == torch.bool else diagonal == 0
    return valid.expand(query.shape[0], -1)


def _right_padded(valid: torch.Tensor) -> bool:
    """Every row is real tokens and then only pads."""
    return bool((valid[:, 1:] <= valid[:, :-1]).all())
