"""A stage's LLM world: the roles an LLM plays this round (``world`` resource), sharing the
warehouse's content-addressed call cache and one call log that the stage writes as its
``llm_calls`` rows, in the same transaction as its own rows. In a procedural world the roles
are all None and nothing is called."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from flywheel_assets.assets.common import endpoint_failures_name
from flywheel_assets.llm_cache import WarehouseCallCache
from flywheel_assets.resources import WarehouseResource, WorldResource
from flywheel_assets.world.domain_files import simulated_by
from flywheel_assets.world.domains import registered
from flywheel_assets.world.llm.roles import WorldRoles, build_world_roles
from flywheel_assets.world.llm.tool import LLMToolBackend
from flywheel_assets.world_roles import WorldSettings


@dataclass
class StageWorld:
    settings: WorldSettings
    llm_roles: tuple[str, ...]  # the roles an LLM plays in this stage
    roles: WorldRoles
    cache: WarehouseCallCache | None

    def teacher(self, round_key: str) -> Any:
        """The LLM teacher (an OpenAI-compatible policy on the round's cache and call log), or
        None when the teacher is the scripted oracle."""
        if "teacher" not in self.llm_roles:
            return None
        from flywheel_training.policies.openai_compat import OpenAICompatiblePolicy

        config = self.settings.endpoint_configs(("teacher",))["teacher"]
        return OpenAICompatiblePolicy.from_config(config, name=f"teacher:{config.model}", cache=self.cache,
                                                  calls=self.roles.calls, round_key=round_key)

    def solvers(self, round_key: str) -> list[Any] | None:
        """The consistency filter's two independent solvers when the teacher is an LLM: the
        teacher and a second model (``solver_model``), else the scripted teacher; None keeps
        the engine's default (two strategies of the scripted oracle)."""
        teacher = self.teacher(round_key)
        if teacher is None:
            return None
        if not self.settings.solver_model:
            from flywheel_assets.world.teacher import ScriptedTeacher

            return [teacher, ScriptedTeacher("just_in_time")]
        from dataclasses import replace

        from flywheel_training.policies.openai_compat import OpenAICompatiblePolicy

        config = replace(self.settings.endpoint_configs(("teacher",))["teacher"], model=self.settings.solver_model)
        return [teacher, OpenAICompatiblePolicy.from_config(config, name=f"solver:{config.model}", cache=self.cache,
                                                            calls=self.roles.calls, round_key=round_key)]

    def bind(self, policy: Any, round_key: str) -> Any:
        """An OpenAI-compatible policy's calls go to the round's cache and call log too."""
        if hasattr(policy, "bind"):
            policy.bind(cache=self.cache, calls=self.roles.calls, round_key=round_key)
        return policy

    def call_rows(self) -> list[dict[str, Any]]:
        return self.roles.call_rows()

    def figures(self) -> dict[str, float]:
        return self.roles.flat_figures()


@contextmanager
def stage_world(warehouse: WarehouseResource, world: WorldResource, round_key: str, stage: str,
                roles: tuple[str, ...] | None = None) -> Iterator[StageWorld]:
    """The LLM roles of ``stage`` of ``round_key`` (those of ``roles`` the world plays by
    LLM). With an LLM tool, the domain files' tools without an implementation are simulated
    by it while the stage runs. The cache's new entries are written when the stage ends, also when it fails, so
    the calls already paid for are kept. An endpoint that fails for good fails the step
    with a message naming the round (and the role, endpoint and model)."""
    settings = world.settings()
    wanted = tuple(r for r in settings.roles if roles is None or r in roles)
    cache = WarehouseCallCache(warehouse.warehouse()) if settings.llm_cache else None
    configs = settings.endpoint_configs(tuple(r for r in wanted if r != "teacher"))
    built = build_world_roles(configs, cache=cache, round_key=round_key, stage=stage)
    try:
        with endpoint_failures_name(round_key), ExitStack() as bound:
            if "tool" in built.clients:
                for name, domain in sorted(registered().items()):
                    bound.enter_context(simulated_by(name, LLMToolBackend(domain, built.clients["tool"])))
            yield StageWorld(settings, wanted, built, cache)
    finally:
        if cache is not None:
            cache.flush()
