"""Who plays the world: the registry of world backends (procedural, llm) and their settings.

``--world procedural`` (the default) plays every role with the engine's procedural code and
needs no network. ``--world llm`` plays the roles named in ``--llm-roles`` (all five by
default: user, tool, teacher, judge, writer) through OpenAI-compatible endpoints and the rest
procedurally, so mixed worlds work (``--llm-roles user``: an LLM user, procedural tools). One
endpoint serves every role (``FLYWHEEL_LLM_BASE_URL``, ``FLYWHEEL_LLM_MODEL``) unless a role
names its own (``FLYWHEEL_USER_BASE_URL``, ``FLYWHEEL_USER_MODEL``, …). No Dagster here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from flywheel_assets.world.settings import SettingsGroup, setting, split_list

if TYPE_CHECKING:
    from flywheel_assets.world.llm.client import EndpointConfig

LLM_ROLES = ("user", "tool", "teacher", "judge", "writer")


@dataclass(frozen=True)
class WorldBackend:
    name: str
    description: str
    needs_endpoint: bool


WORLD_BACKENDS: dict[str, WorldBackend] = {b.name: b for b in (
    WorldBackend("procedural", "the engine's procedural user, executable tools, scripted teacher, predicate judge "
                               "and template writer (offline, deterministic)", False),
    WorldBackend("llm", "the roles in --llm-roles through OpenAI-compatible endpoints (vLLM, hosted APIs), "
                        "behind the warehouse's call cache", True),
)}


def _role_url(role: str) -> str:
    return setting("", env=f"FLYWHEEL_{role.upper()}_BASE_URL", flag=f"{role}-base-url",
                   help=f"the {role} role's own endpoint (empty: llm_base_url)")


def _role_model(role: str) -> str:
    return setting("", env=f"FLYWHEEL_{role.upper()}_MODEL", flag=f"{role}-model",
                   help=f"the {role} role's own model (empty: llm_model)")


class WorldSettings(SettingsGroup):
    group: ClassVar[str] = "world"

    world: str = setting("procedural", env="FLYWHEEL_WORLD", flag="world", choices=lambda: list(WORLD_BACKENDS),
                         help="who plays the world roles: procedural (offline default) or llm")
    llm_roles: str = setting(",".join(LLM_ROLES), env="FLYWHEEL_LLM_ROLES", choices=lambda: LLM_ROLES, many=True,
                             help="with --world llm: the roles played by an LLM (the others stay procedural)")
    llm_base_url: str = setting("", env="FLYWHEEL_LLM_BASE_URL", help="the endpoint of every LLM role, e.g. "
                                                                     "http://127.0.0.1:8000/v1")
    llm_model: str = setting("", env="FLYWHEEL_LLM_MODEL", help="the served model of every LLM role")
    llm_api_key_env: str = setting("OPENAI_API_KEY", env="FLYWHEEL_LLM_API_KEY_ENV",
                                   help="the environment variable holding the endpoints' key (never the key itself)")
    llm_max_tokens: int = setting(512, env="FLYWHEEL_LLM_MAX_TOKENS", ge=1, help="tokens per LLM-role reply")
    llm_timeout_s: float = setting(60.0, env="FLYWHEEL_LLM_TIMEOUT_S", ge=0.001,
                                   help="seconds per LLM-role request before it counts as failed")
    llm_max_retries: int = setting(3, env="FLYWHEEL_LLM_MAX_RETRIES", ge=0,
                                   help="retries of a failed LLM-role request (with backoff) before the step fails")
    llm_concurrency: int = setting(8, env="FLYWHEEL_LLM_CONCURRENCY", ge=1, help="LLM-role requests in flight")
    llm_cache: bool = setting(True, env="FLYWHEEL_LLM_CACHE",
                              help="answer repeated LLM calls from the warehouse's call cache (--no-llm-cache "
                                   "bypasses it)")
    solver_model: str = setting("", env="FLYWHEEL_SOLVER_MODEL",
                                help="with an LLM teacher: the consistency filter's second solver, another model at "
                                     "the teacher's endpoint (empty: the scripted teacher)")
    user_base_url: str = _role_url("user")
    user_model: str = _role_model("user")
    tool_base_url: str = _role_url("tool")
    tool_model: str = _role_model("tool")
    teacher_base_url: str = _role_url("teacher")
    teacher_model: str = _role_model("teacher")
    judge_base_url: str = _role_url("judge")
    judge_model: str = _role_model("judge")
    writer_base_url: str = _role_url("writer")
    writer_model: str = _role_model("writer")

    @property
    def backend(self) -> WorldBackend:
        return WORLD_BACKENDS[self.world]

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles an LLM plays (none in a procedural world)."""
        return tuple(split_list(self.llm_roles)) if self.backend.needs_endpoint else ()

    def endpoint(self, role: str, *, required: bool = True) -> tuple[str, str] | None:
        """(base URL, model) of ``role``: its own, else the shared one. Unset: an error naming
        what to set, or None when not ``required``."""
        base_url = getattr(self, f"{role}_base_url") or self.llm_base_url
        model = getattr(self, f"{role}_model") or self.llm_model
        if (not base_url or not model) and not required:
            return None
        if not base_url or not model:
            upper = role.upper()
            raise ValueError(f"the LLM {role} needs an endpoint: set FLYWHEEL_LLM_BASE_URL and FLYWHEEL_LLM_MODEL "
                             f"(or FLYWHEEL_{upper}_BASE_URL and FLYWHEEL_{upper}_MODEL; --llm-base-url / "
                             f"--llm-model)")
        return base_url, model

    def endpoint_configs(self, roles: tuple[str, ...] | None = None, *, seed: int = 0) -> dict[str, EndpointConfig]:
        """An ``EndpointConfig`` per LLM role (``roles``, default: the ones this world plays
        through an LLM); the role's default temperature (a simulated customer varies its
        wording; a simulated tool, a judge and a teacher should not)."""
        from flywheel_assets.world.llm.client import EndpointConfig
        from flywheel_assets.world.llm.roles import ROLE_TEMPERATURE

        configs = {}
        for role in self.roles if roles is None else roles:
            base_url, model = self.endpoint(role)  # type: ignore[misc]
            configs[role] = EndpointConfig(role=role, base_url=base_url, model=model, api_key_env=self.llm_api_key_env,
                                           temperature=ROLE_TEMPERATURE.get(role, 0.0), max_tokens=self.llm_max_tokens,
                                           timeout=self.llm_timeout_s, concurrency=self.llm_concurrency,
                                           max_retries=self.llm_max_retries, seed=seed, use_cache=self.llm_cache)
        return configs
