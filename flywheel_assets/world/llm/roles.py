"""Building the LLM world roles of one round and stage from endpoint configs.

The configs come from the world settings (``flywheel_assets/world_roles.py``: FLYWHEEL_LLM_BASE_URL,
FLYWHEEL_LLM_MODEL, the per-role FLYWHEEL_<ROLE>_BASE_URL / _MODEL, …); ``build_world_roles``
turns them into a mock-user factory, a tool
backend factory, a judge and a task writer sharing one call cache and one call log. A role
without a config stays procedural, so worlds can be mixed (procedural tools, LLM user).
The teacher is the OpenAI-compatible policy (``flywheel_training``; built there from the
``teacher`` config with the same cache and log, see ``OpenAICompatiblePolicy.from_config``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from flywheel_assets.world.llm.accounting import ROLES, CallLog, call_figures, flat_call_figures
from flywheel_assets.world.llm.cache import CallCache
from flywheel_assets.world.llm.client import EndpointConfig, LLMClient
from flywheel_assets.world.llm.judge import LLMJudge
from flywheel_assets.world.llm.tool import LLMToolBackendFactory
from flywheel_assets.world.llm.user import LLMUserFactory
from flywheel_assets.world.llm.writer import LLMTaskWriter

WORLD_ROLES = ("user", "tool", "judge", "writer")
ROLE_TEMPERATURE = {"user": 0.7, "tool": 0.0, "judge": 0.0, "writer": 0.7, "teacher": 0.0, "policy": 0.7}
"""Defaults: a simulated customer varies its wording; a simulated tool and a judge should not."""


@dataclass
class WorldRoles:
    """The LLM roles of one round (and stage); None means that role stays procedural.
    Pass ``user_factory`` and ``backend_for`` to ``run_rollouts`` / ``make_caches``."""

    calls: CallLog
    clients: dict[str, LLMClient] = field(default_factory=dict)
    user_factory: LLMUserFactory | None = None
    backend_for: LLMToolBackendFactory | None = None
    judge: LLMJudge | None = None
    writer: LLMTaskWriter | None = None
    world_writer: Any = None  # an LLMWorldWriter (world/llm/world_writer.py): a domain file's tasks

    def call_rows(self) -> list[dict[str, Any]]:
        """The ``llm_calls`` rows so far (without ``round``: the store fills it)."""
        return self.calls.rows()

    def figures(self) -> dict[str, dict[str, float]]:
        return call_figures(self.calls.rows())

    def flat_figures(self, prefix: str = "llm_") -> dict[str, float]:
        return flat_call_figures(self.calls.rows(), prefix)


def build_world_roles(configs: Mapping[str, EndpointConfig], *, cache: CallCache | None, round_key: str,
                      stage: str = "", calls: CallLog | None = None, output_retries: int = 2) -> WorldRoles:
    """Clients and roles for every world role in ``configs`` (user, tool, judge, writer),
    sharing ``cache`` (None: no call cache) and one call log for ``stage`` of ``round_key``."""
    calls = calls if calls is not None else CallLog(stage)
    clients = {}
    for role, config in configs.items():
        if role not in WORLD_ROLES:
            continue  # the teacher / policy are built by flywheel_training from their config
        if config.role != role:
            config = replace(config, role=role)
        clients[role] = LLMClient(config, cache=cache, calls=calls, round_key=round_key)
    world_writer = None
    if "writer" in clients:
        from flywheel_assets.world.llm.world_writer import LLMWorldWriter

        world_writer = LLMWorldWriter(clients["writer"], max(1, output_retries - 1))
    return WorldRoles(
        calls=calls,
        world_writer=world_writer,
        clients=clients,
        user_factory=LLMUserFactory(clients["user"], output_retries) if "user" in clients else None,
        backend_for=LLMToolBackendFactory(clients["tool"], output_retries) if "tool" in clients else None,
        judge=LLMJudge(clients["judge"], max(1, output_retries - 1)) if "judge" in clients else None,
        writer=LLMTaskWriter(clients["writer"], max(1, output_retries - 1)) if "writer" in clients else None,
    )
