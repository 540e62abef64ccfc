"""The policy as an in-process vLLM engine (GPU extra: ``pip install -e '.[gpu]'``).

One ``LLM.generate`` call per rollout turn serves every live episode; vLLM schedules the
batch itself. Prompts are rendered with the model's chat template through
``flywheel_training.chat.render`` (the same rendering the trainers and the local server
use) rather than ``LLM.chat``, because one batch mixes episodes of different domains with
different tool lists and ``LLM.chat`` takes a single ``tools`` list for the whole batch.
Generated text goes through ``chat.parse_assistant``, so malformed output is an observation.

The recommended production set-up is still ``vllm serve`` in its own environment with
``OpenAICompatiblePolicy``: it keeps vLLM's pins out of the training environment.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flywheel_assets.world.rollout import PolicyRequest
from flywheel_training.policies.openai_compat import request_seed

INSTALL_HINT = "install the gpu extra: pip install -e '.[gpu]'"


def import_vllm() -> Any:
    """The vllm module, or an ImportError that says how to get it."""
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(f"VLLMPolicy needs vLLM, which is not installed here; {INSTALL_HINT} "
                          "(or serve the model with `vllm serve` and use OpenAICompatiblePolicy)") from exc
    return vllm


class VLLMPolicy:
    def __init__(
        self,
        model_path: str | Path,
        *,
        temperature: float = 0.7,
        top_p: float = 1.0,
        max_tokens: int = 512,
        seed: int = 0,
        name: str | None = None,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        **llm_kwargs: Any,
    ):
        vllm = import_vllm()
        self._sampling_params = vllm.SamplingParams
        self.model_path = str(model_path)
        self.temperature = temperature
        self.top_p = top_p
        self.max_tokens = max_tokens
        self.seed = seed
        self.name = name or f"vllm:{Path(self.model_path).name}"
        if max_model_len is not None:
            llm_kwargs["max_model_len"] = max_model_len
        self._llm = vllm.LLM(model=self.model_path, seed=seed, gpu_memory_utilization=gpu_memory_utilization,
                             **llm_kwargs)
        self._tokenizer = self._llm.get_tokenizer()

    def __repr__(self) -> str:
        return f"VLLMPolicy(model_path={self.model_path!r}, temperature={self.temperature}, max_tokens={self.max_tokens})"

    def generate(self, requests: Sequence[PolicyRequest]) -> list[dict[str, Any]]:
        from flywheel_training.chat import parse_assistant, render

        if not requests:
            return []
        prompts = [render(self._tokenizer, list(r.messages), list(r.tools), add_generation_prompt=True)
                   for r in requests]
        params = [self._sampling_params(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                                        seed=request_seed(self.seed, r.sample, r.messages),
                                        # Keep markup tokens such as <tool_call> in the text even where a
                                        # tokenizer marks them special; parse_assistant drops end tokens.
                                        skip_special_tokens=False)
                  for r in requests]
        outputs = self._llm.generate(prompts, params, use_tqdm=False)
        # A fresh id prefix per reply keeps tool-call ids unique across turns.
        return [parse_assistant(out.outputs[0].text if out.outputs else "",
                                id_prefix=f"call_{uuid.uuid4().hex[:12]}_")
                for out in outputs]
