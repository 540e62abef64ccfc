"""Batched generation for the model server: request validation, per-row seeded sampling,
and a batcher that gathers concurrent requests into one ``generate`` call."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flywheel_training.policies.sampling import draw_token
from flywheel_training.serve.models import ModelSource, load_model, resolve_model

log = logging.getLogger("flywheel.serve")


class RequestError(Exception):
    """A client error: answered with its HTTP status and an OpenAI-style error body."""

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.param = param


@dataclass
class Job:
    """One validated, rendered request waiting for the batcher."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"


class _PerRowSampler:
    """A logits processor that samples each row with its own seeded generator and returns
    logits that make greedy decoding pick that token. HF ``generate`` samples a whole batch
    from one global RNG, which would make outputs depend on batch composition; this keeps
    one request's output a function of its own seed. It also ends each row at its own
    ``max_tokens`` by forcing end-of-sequence."""

    def __init__(self, jobs: list[Job], prompt_width: int, eos_id: int):
        self.jobs = jobs
        self.prompt_width = prompt_width
        self.eos_id = eos_id
        self.generators = [torch.Generator().manual_seed(job.seed) for job in jobs]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_width
        out = torch.full_like(scores, float("-inf"))
        for row, job in enumerate(self.jobs):
            if step >= job.max_tokens:
                token = self.eos_id
            else:
                token = draw_token(scores[row], job.temperature, job.top_p, self.generators[row])
            out[row, token] = 0.0
        return out


class Engine:
    """The model, its tokenizer and batched generation."""

    def __init__(self, model: str | Path | ModelSource, served_name: str, default_max_tokens: int = 512, *,
                 chat_template: str = "auto"):
        """``model``: a model folder, a ``.gguf`` file, a named model (``smollm2``) or a
        resolved ``ModelSource``; ``chat_template``: see ``models.TEMPLATE_CHOICES``."""
        source = model if isinstance(model, ModelSource) else resolve_model(model)
        self.model_dir = str(source.path)
        self.served_name = served_name
        self.default_max_tokens = default_max_tokens
        self.tokenizer, self.model = load_model(source, chat_template)
        self.context = int(getattr(self.model.config, "max_position_embeddings", 0) or 0) or None
        eos = self.model.generation_config.eos_token_id
        eos_ids = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in eos_ids:
            eos_ids.append(self.tokenizer.eos_token_id)
        if not eos_ids:
            raise ValueError(f"{self.model_dir}: neither the generation config nor the tokenizer names an EOS token")
        self.eos_ids = eos_ids
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos_ids[0]

    def prepare(self, body: Any) -> Job:
        """Validate a chat-completions body and render its prompt; RequestError if invalid."""
        from flywheel_training.chat import render

        if not isinstance(body, dict):
            raise RequestError(400, "the request body must be a JSON object")
        model = body.get("model")
        if model is not None and model != self.served_name:
            raise RequestError(404, f"the model {model!r} does not exist; this server serves {self.served_name!r}",
                               "model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError(400, "messages must be a non-empty list", "messages")
        for index, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool"):
                raise RequestError(400, f"messages[{index}] needs a role of system, user, assistant or tool",
                                   "messages")
            if not isinstance(m.get("content"), (str, type(None))):
                raise RequestError(400, f"messages[{index}].content must be a string", "messages")
        tools = body.get("tools")
        if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
            raise RequestError(400, "tools must be a list of objects", "tools")
        if body.get("n", 1) != 1:
            raise RequestError(400, "only n=1 is supported", "n")
        if body.get("stream"):
            raise RequestError(400, "streaming is not supported", "stream")
        temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
        top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
        if top_p <= 0:
            raise RequestError(400, "top_p must be greater than 0", "top_p")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                       or max_tokens < 1):
            raise RequestError(400, "max_tokens must be a positive integer", "max_tokens")
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise RequestError(400, "seed must be an integer", "seed")
        try:
            text = render(self.tokenizer, messages, tools, add_generation_prompt=True)
        except Exception as exc:  # a template error is the request's fault, not the server's
            raise RequestError(400, f"the chat template could not render these messages: {exc}", "messages") from exc
        prompt_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        room = (self.context - len(prompt_ids)) if self.context else None
        if room is not None and room < 1:
            raise RequestError(400, f"the prompt is {len(prompt_ids)} tokens; this model's maximum context length "
                                    f"is {self.context} tokens", "messages")
        limit = max_tokens or self.default_max_tokens
        return Job(prompt_ids=prompt_ids, max_tokens=min(limit, room) if room else limit,
                   temperature=temperature, top_p=top_p,
                   seed=(seed if seed is not None else int.from_bytes(os.urandom(4), "little")) % 2**63)

    @torch.inference_mode()
    def generate(self, jobs: list[Job]) -> list[Completion]:
        from transformers import GenerationConfig, LogitsProcessorList

        width = max(len(job.prompt_ids) for job in jobs)
        input_ids = torch.full((len(jobs), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(jobs), width), dtype=torch.long)
        for row, job in enumerate(jobs):  # left padding: every row's next token sits at the end
            input_ids[row, width - len(job.prompt_ids):] = torch.tensor(job.prompt_ids)
            attention[row, width - len(job.prompt_ids):] = 1
        config = GenerationConfig(max_new_tokens=max(job.max_tokens for job in jobs) + 1, do_sample=False,
                                  eos_token_id=self.eos_ids, pad_token_id=self.pad_id)
        sampler = _PerRowSampler(jobs, width, self.eos_ids[0])
        out = self.model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config,
                                  logits_processor=LogitsProcessorList([sampler]))
        completions = []
        for row, job in enumerate(jobs):
            new = out[row, width:].tolist()
            end = next((i for i, t in enumerate(new) if t in self.eos_ids), len(new))
            # An EOS the sampler forced at the limit means the row ran out of tokens.
            finish = "stop" if end < min(job.max_tokens, len(new)) else "length"
            new = new[:min(end, job.max_tokens)]
            completions.append(Completion(self.tokenizer.decode(new, skip_special_tokens=False),
                                          len(job.prompt_ids), len(new), finish))
        return completions


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise RequestError(400, f"{key} must be a number between {low:g} and {high:g}", key)
    return float(value)


class Batcher:
    """Gathers requests that arrive together and generates them as one batch, one batch at
    a time (the model is not thread-safe, and one batch uses the CPU cores better than
    several interleaved ones)."""

    def __init__(self, engine: Engine, max_batch: int = 16, gather_s: float = 0.01):
        self.engine = engine
        self.max_batch = max_batch
        self.gather_s = gather_s
        self.queue: queue.Queue[tuple[Job, Future[Completion]]] = queue.Queue()
        threading.Thread(target=self._loop, name="batcher", daemon=True).start()

    def submit(self, job: Job) -> Future[Completion]:
        future: Future[Completion] = Future()
        self.queue.put((job, future))
        return future

    def _loop(self) -> None:
        while True:
            batch = [self.queue.get()]
            deadline = time.monotonic() + self.gather_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            try:
                results = self.engine.generate([job for job, _ in batch])
            except Exception as exc:  # fail these requests (500), keep serving the next ones
                log.exception("generation failed for a batch of %d", len(batch))
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results):
                future.set_result(result)
