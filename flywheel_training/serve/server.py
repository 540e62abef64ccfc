"""The HTTP side of the model server: OpenAI chat-completions routes, auth, and the CLI."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from flywheel_training.serve.engine import Batcher, Completion, Engine, RequestError
from flywheel_training.serve.models import (SHORTCUTS, SMOLLM2_INSTALL, TEMPLATE_CHOICES, ModelNotFound,
                                            ModelSource, resolve_model)

log = logging.getLogger("flywheel.serve")

MAX_BODY_BYTES = 32 * 1024 * 1024
"""Larger request bodies are refused before they are read."""


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


def build_server(model: str | Path | ModelSource, host: str = "127.0.0.1", port: int = 8000, *,
                 served_name: str | None = None, api_key: str | None = None, max_batch: int = 16,
                 default_max_tokens: int = 512, chat_template: str = "auto") -> ThreadingHTTPServer:
    """A ready-to-serve HTTP server (call ``serve_forever``) for a model folder, a GGUF file
    or a named model (see ``models.resolve_model``); the model is loaded first, so the port
    answers only once it can generate."""
    source = model if isinstance(model, ModelSource) else resolve_model(model)
    engine = Engine(source, served_name or source.name, default_max_tokens, chat_template=chat_template)
    server = ThreadingHTTPServer((host, port), make_handler(engine, Batcher(engine, max_batch), api_key))
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    parser = argparse.ArgumentParser(
        prog="python -m flywheel_training.serve",
        description="Serve a local model (a Hugging Face folder, a GGUF file, or a model a package ships) as an "
                    "OpenAI-compatible chat-completions endpoint. Nothing is downloaded.")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="a Hugging Face model folder (weights, tokenizer, template), a .gguf file, "
                                       f"or a named model: {', '.join(sorted(SHORTCUTS))} ({SMOLLM2_INSTALL})")
    which.add_argument("--gguf", help="a GGUF file (any name), loaded with transformers and the gguf package")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", default=None, help="the model id clients send (default: the folder name, the GGUF file's stem, "
                             "or the named model)")
    parser.add_argument("--api-key-env", default=None,
                        help="name of an environment variable holding the API key clients must send")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--default-max-tokens", type=int, default=512)
    parser.add_argument("--chat-template", choices=TEMPLATE_CHOICES, default="auto",
                        help="auto: the model's own template if it renders tools and null content, else the "
                             "project's tool-aware one; model / project: always that one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            parser.error(f"--api-key-env {args.api_key_env}: that environment variable is not set")
    try:
        source = resolve_model(args.model, args.gguf)
        server = build_server(source, args.host, args.port, served_name=args.served_model_name, api_key=api_key,
                              max_batch=args.max_batch, default_max_tokens=args.default_max_tokens,
                              chat_template=args.chat_template)
    except ModelNotFound as exc:  # a missing package or file: say what to install, not a traceback
        parser.error(str(exc))
    host, port = server.server_address[:2]
    print(f"serving {source.path} as {args.served_model_name or source.name!r} at http://{host}:{port}/v1",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
