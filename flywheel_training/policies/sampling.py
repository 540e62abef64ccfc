"""Sampling in which every row of a batch draws from its own seeded generator.

``generate(do_sample=True)`` draws all rows from torch's one global generator, so what a
conversation samples depends on which conversations share its batch, and so on the batch
size and on how a turn's rows are grouped. Here temperature and top-p shape each row's
distribution as ``transformers``' warpers do, each row draws with a generator seeded from
its own key, and the drawn token is the only one left for greedy decoding to pick: a row's
sample depends on its seed key alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor


class RowSeededSampler(LogitsProcessor):
    def __init__(self, seeds: Sequence[int], *, temperature: float, top_p: float = 1.0, device: torch.device | str = "cpu"):
        if temperature <= 0:
            raise ValueError(f"sampling temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.top_p = top_p
        self.generators = [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            # keep the smallest set of most likely tokens whose mass reaches top_p (at least one)
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= self.top_p
            sorted_probs = sorted_probs.masked_fill(outside, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        drawn = torch.cat([torch.multinomial(row, 1, generator=generator)
                           for row, generator in zip(probs, self.generators)])
        only = torch.full_like(scores, float("-inf"))
        return only.scatter(-1, drawn.unsqueeze(-1), 0.0)
