"""flywheel_sdpa computes what masked SDPA computes, on every real position, forward and back."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from flywheel_training.attention import ATTENTION, attention_forward, use_flywheel_attention
from flywheel_training.tiny import TinyConfig, build_tiny

BATCH, HEADS, KV_HEADS, LENGTH, DIM, WINDOW = 3, 4, 2, 40, 8, 6


def _inputs(seed: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    shapes = [(BATCH, HEADS, LENGTH, DIM), (BATCH, KV_HEADS, LENGTH, DIM), (BATCH, KV_HEADS, LENGTH, DIM)]
    return tuple(torch.randn(*shape, generator=generator, requires_grad=True) for shape in shapes)


def _mask(valid: torch.Tensor, window: int | None) -> torch.Tensor:
    """The boolean mask transformers builds: causal, within the window, real keys only."""
    i = torch.arange(LENGTH)
    allowed = i[:, None] >= i[None, :]
    if window:
        allowed &= i[:, None] - i[None, :] < window
    return (allowed[None] & valid[:, None, :])[:, None]


PADDINGS = {
    "none": torch.ones(BATCH, LENGTH, dtype=torch.bool),
    "right": torch.arange(LENGTH)[None] < torch.tensor([[LENGTH], [LENGTH - 7], [LENGTH - 25]]),
    "left": torch.arange(LENGTH)[None] >= torch.tensor([[0], [9], [30]]),
}


class _Layer(torch.nn.Module):
    num_key_value_groups = HEADS // KV_HEADS
    is_causal = True


@pytest.mark.parametrize("window", [None, WINDOW])
@pytest.mark.parametrize("padding", sorted(PADDINGS))
def test_same_outputs_and_gradients_as_masked_sdpa(padding: str, window: int | None):
    valid = PADDINGS[padding]
    mask = _mask(valid, window)
    results = []
    for implementation in ("reference", "flywheel"):
        query, key, value = _inputs(seed=1)
        if implementation == "reference":
            out = torch.nn.functional.scaled_dot_product_attention(
                query, key.repeat_interleave(2, 1), value.repeat_interleave(2, 1), attn_mask=mask).transpose(1, 2)
        else:
            out, _ = attention_forward(_Layer(), query, key, value, mask, scaling=DIM ** -0.5, sliding_window=window)
        real = out[valid]  # (real positions, heads, dim): pads' outputs are never read
        (real * torch.linspace(-1, 1, real.numel()).view_as(real)).sum().backward()
        results.append((real.detach(), query.grad, key.grad, value.grad))
    for expected, got in zip(*results):
        torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)


def test_a_model_gives_the_same_logits_and_saves_no_trace_of_it(tmp_path):
    base = build_tiny(tmp_path / "base", TinyConfig(induction_steps=0, recall_steps=0, vocab_size=512,
                                                     corpus_tasks_per_domain=1, max_position_embeddings=256))
    ids = torch.randint(3, 500, (2, 48), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0  # right padding, as in a training batch
    reference = AutoModelForCausalLM.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    use_flywheel_attention(model)
    assert model.config._attn_implementation == ATTENTION
    assert model.config.sliding_window and model.config.sliding_window < 48  # the windowed path runs
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).logits
        got = model(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-4, rtol=1e-4)
    model.save_pretrained(tmp_path / "saved")
    assert ATTENTION not in (tmp_path / "saved" / "config.json").read_text()
    assert "attn_implementation" not in json.loads((tmp_path / "saved" / "config.json").read_text())
