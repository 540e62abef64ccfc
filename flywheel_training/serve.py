"""A small OpenAI-compatible chat-completions server for a local Hugging Face model folder.

    python -m flywheel_training.serve --model PATH [--host 127.0.0.1] [--port 8000]

It exists so the OpenAI-compatible policy backend can be exercised end to end against a real
HTTP server without a GPU or vLLM, and so a local checkpoint can be handed to any tool that
speaks the OpenAI API. Endpoints: ``GET /v1/models`` and ``POST /v1/chat/completions``
(``messages``, ``tools``, ``temperature``, ``top_p``, ``max_tokens``, ``seed``, ``n=1``).

Prompts are rendered with the model's own chat template (``flywheel_training.chat.render``)
and generated text is parsed back into tool calls with ``chat.parse_assistant``. Concurrent
requests are gathered into batches and generated together; every row samples from its own
seeded generator, so a request's output depends on its seed and not on what it was batched
with. The production set-up is ``vllm serve``; this server is for CPU-sized models.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("flywheel.serve")

MAX_BODY_BYTES = 32 * 1024 * 1024
"""Larger request bodies are refused before they are read."""


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
            elif job.temperature <= 0:
                token = int(scores[row].argmax())
            else:
                probs = torch.softmax(scores[row].float() / job.temperature, dim=-1)
                if job.top_p < 1.0:
                    sorted_probs, order = probs.sort(descending=True)
                    # Keep the smallest prefix whose mass reaches top_p (always at least one token).
                    drop = sorted_probs.cumsum(-1) - sorted_probs >= job.top_p
                    probs = probs.scatter(0, order, sorted_probs.masked_fill(drop, 0.0))
                token = int(torch.multinomial(probs, 1, generator=self.generators[row]))
            out[row, token] = 0.0
        return out


class Engine:
    """The model, its tokenizer and batched generation."""

    def __init__(self, model_dir: str | Path, served_name: str, default_max_tokens: int = 512):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_dir = str(model_dir)
        self.served_name = served_name
        self.default_max_tokens = default_max_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32).eval()
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


def completion_response(completion: Completion, model: str) -> dict[str, Any]:
    """The standard chat.completion body for one generated text."""
    from flywheel_training.chat import parse_assistant

    # A per-response id prefix keeps tool-call ids unique across the turns of a conversation.
    message = parse_assistant(completion.text, id_prefix=f"call_{uuid.uuid4().hex[:12]}_")
    calls = message.get("tool_calls") or []
    out_message: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    if calls:
        out_message["tool_calls"] = calls
    finish = "tool_calls" if calls and completion.finish_reason == "stop" else completion.finish_reason
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": out_message, "finish_reason": finish, "logprobs": None}],
        "usage": {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
                  "total_tokens": completion.prompt_tokens + completion.completion_tokens},
    }


def make_handler(engine: Engine, batcher: Batcher, api_key: str | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the openai client reuses connections

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, param: str | None = None) -> None:
            kind = "invalid_request_error" if status < 500 else "server_error"
            self._send(status, {"error": {"message": message, "type": kind, "param": param, "code": status}})

        def _authorised(self) -> bool:
            if api_key is None:
                return True
            if self.headers.get("Authorization", "") == f"Bearer {api_key}":
                return True
            self._error(401, "invalid or missing API key")
            return False

        def do_GET(self) -> None:
            if self.path.rstrip("/") not in ("/v1/models", "/models"):
                self._error(404, f"no route {self.path}")
            elif self._authorised():
                self._send(200, {"object": "list", "data": [
                    {"id": engine.served_name, "object": "model", "created": 0, "owned_by": "flywheel",
                     "root": engine.model_dir}]})

        def do_POST(self) -> None:
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                self._error(404, f"no route {self.path}")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self.close_connection = True  # the unread body would corrupt the next request
                self._error(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
                return
            raw = self.rfile.read(length)
            if not self._authorised():
                return
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError):
                self._error(400, "the request body is not valid JSON")
                return
            try:
                job = engine.prepare(body)
            except RequestError as exc:
                self._error(exc.status, str(exc), exc.param)
                return
            except Exception as exc:  # answer, rather than drop the connection (which reads as a network fault)
                log.exception("could not prepare a request")
                self._error(500, f"could not prepare the request: {type(exc).__name__}: {exc}")
                return
            try:
                completion = batcher.submit(job).result()
            except Exception as exc:
                self._error(500, f"generation failed: {type(exc).__name__}: {exc}")
                return
            self._send(200, completion_response(completion, engine.served_name))

    return Handler


def build_server(model: str | Path, host: str = "127.0.0.1", port: int = 8000, *, served_name: str | None = None,
                 api_key: str | None = None, max_batch: int = 16, default_max_tokens: int = 512
                 ) -> ThreadingHTTPServer:
    """A ready-to-serve HTTP server (call ``serve_forever``); the model is loaded first, so
    the port answers only once it can generate."""
    engine = Engine(model, served_name or Path(model).resolve().name, default_max_tokens)
    server = ThreadingHTTPServer((host, port), make_handler(engine, Batcher(engine, max_batch), api_key))
    server.daemon_threads = True
    return server


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it for a socket bound to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextmanager
def serve_in_subprocess(model: str | Path, *, served_name: str | None = None, api_key_env: str | None = None,
                        extra_args: list[str] | None = None, ready_timeout_s: float = 180.0) -> Iterator[str]:
    """Run this server for ``model`` in a child process on a free loopback port; yields the
    base URL (``http://127.0.0.1:PORT/v1``) once it answers, and stops the child on exit.
    For tests, benchmarks and evaluations that want a local OpenAI-compatible endpoint."""
    port = free_port()
    args = [sys.executable, "-m", "flywheel_training.serve", "--model", str(model), "--host", "127.0.0.1",
            "--port", str(port), *(["--served-model-name", served_name] if served_name else []),
            *(["--api-key-env", api_key_env] if api_key_env else []), *(extra_args or [])]
    base_url = f"http://127.0.0.1:{port}/v1"
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: a full pipe would block the child
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=errors)
        try:
            deadline = time.monotonic() + ready_timeout_s
            while not _answers(base_url + "/models"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    errors.seek(0)
                    tail = errors.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"the model server for {model} did not come up at {base_url} "
                                       f"(exit code {proc.poll()}):\n{tail}")
                time.sleep(0.2)
            yield base_url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # e.g. 401 without a key: the server is up
    except OSError:
        return False


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    parser = argparse.ArgumentParser(prog="python -m flywheel_training.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a Hugging Face model folder (weights, tokenizer, template)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", default=None, help="the model id clients send (default: folder name)")
    parser.add_argument("--api-key-env", default=None,
                        help="name of an environment variable holding the API key clients must send")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--default-max-tokens", type=int, default=512)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            parser.error(f"--api-key-env {args.api_key_env}: that environment variable is not set")
    server = build_server(args.model, args.host, args.port, served_name=args.served_model_name, api_key=api_key,
                          max_batch=args.max_batch, default_max_tokens=args.default_max_tokens)
    host, port = server.server_address[:2]
    print(f"serving {args.model} at http://{host}:{port}/v1", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
