"""Typed settings, each declared once: default, ``FLYWHEEL_*`` environment variable, validation
and help text live on one field of one settings group.

Everything else is derived from these groups: the Dagster resources (``resources.py``, whose
fields are generated from a group's fields), the ``flywheel`` command's flags
(``cli_settings.py``), the README's settings table (``flywheel settings --markdown``) and the
runner's overrides. Adding a setting therefore touches one file. No Dagster here: the engine,
the trainers and the engine-only CLI verbs read the same groups.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class SettingsError(ValueError):
    """An invalid setting: the message names the setting, where it came from and what is allowed."""


@dataclass(frozen=True)
class SettingSpec:
    """One setting as the CLI, the resources and the docs see it."""

    group: str
    name: str
    type: type
    default: Any
    env: str
    help: str
    flag: str | None  # the ``flywheel`` flag, or None for settings without one
    choices: Callable[[], Sequence[str]] | None = None
    many: bool = False  # a comma-separated list of choices
    repeat: bool = False  # the flag may be given several times; its values join into a comma-separated list

    def allowed(self) -> list[str]:
        return list(self.choices()) if self.choices else []

    def where(self) -> str:
        """Where a user gives it: ``FLYWHEEL_X, --x`` (the variable alone where there is no flag)."""
        return ", ".join([self.env] + ([self.flag] if self.flag else []))

    def named(self) -> str:
        """How error messages name it: ``group.name (FLYWHEEL_X, --x)``."""
        return f"{self.group}.{self.name} ({self.where()})"

    def describe(self) -> str:
        """The help text with the default and where else the setting can be given."""
        return f"{self.help} (default: {self.default!r}; {self.where()})"


def setting(default: Any, *, env: str, help: str, flag: str | bool = True,
            choices: Callable[[], Sequence[str]] | None = None, many: bool = False, repeat: bool = False,
            ge: float | None = None, le: float | None = None) -> Any:
    """Declare a setting on a ``SettingsGroup`` (a pydantic field carrying its metadata).

    ``flag=True`` derives the flag from the name (``max_turns`` → ``--max-turns``), a string
    names it, False gives it none. ``choices`` is a callable (registries are read when the
    value is checked, not at import); ``many`` makes the value a comma-separated list of them.
    ``repeat`` lets the flag be given several times (``--domain-file a --domain-file b``).
    """
    return Field(default, description=help, ge=ge, le=le,
                 json_schema_extra={"env": env, "flag": flag, "many": many, "choices": choices, "repeat": repeat})


def _parse(raw: str, kind: type, env: str) -> Any:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{env}={raw!r} is not a boolean (true/false)")
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            raise SettingsError(f"{env}={raw!r} is not {'an integer' if kind is int else 'a number'}") from None
    return raw


class SettingsGroup(BaseModel):
    """A group of settings (one Dagster resource). Frozen: derive a changed copy with ``replace``."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)
    group: ClassVar[str] = ""

    @classmethod
    def specs(cls) -> list[SettingSpec]:
        specs = []
        for name, field in cls.model_fields.items():
            extra = field.json_schema_extra or {}
            if not isinstance(extra, dict) or "env" not in extra:
                raise TypeError(f"{cls.__name__}.{name} is not declared with setting()")
            flag = extra["flag"]
            flag = (f"--{name.replace('_', '-')}" if flag is True else f"--{flag}" if flag else None)
            specs.append(SettingSpec(cls.group, name, field.annotation, field.default, extra["env"],  # type: ignore[arg-type]
                                     field.description or "", flag, extra["choices"], extra["many"],
                                     extra.get("repeat", False)))
        return specs

    @classmethod
    def spec(cls, name: str) -> SettingSpec:
        return next(s for s in cls.specs() if s.name == name)

    @classmethod
    def env_values(cls, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The values the environment sets (empty variables count as unset), parsed."""
        environ = os.environ if environ is None else environ
        return {s.name: _parse(environ[s.env], s.type, s.env) for s in cls.specs() if environ.get(s.env)}

    @classmethod
    def create(cls, **values: Any) -> Self:
        """The group from these values (defaults for the rest), or a SettingsError naming every
        invalid setting, its variable and flag, and what is allowed."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise SettingsError(cls._explain(exc, values)) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Defaults, then the environment, then ``overrides`` (flags): each names only itself."""
        return cls.create(**{**cls.env_values(environ), **overrides})

    def replace(self, **changes: Any) -> Self:
        return type(self).create(**{**self.model_dump(), **changes})

    def values(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def _explain(cls, exc: ValidationError, values: Mapping[str, Any]) -> str:
        specs = {s.name: s for s in cls.specs()}
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else ""
            spec = specs.get(name)
            if spec is None:
                problems.append(f"{cls.group}: unknown setting {name!r}; known: {', '.join(sorted(specs))}"
                                if error["type"] == "extra_forbidden"
                                else error["msg"].removeprefix("Value error, "))
                continue
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{spec.named()} {message}; got {values.get(name, spec.default)!r}")
        return "; ".join(problems)

    def _loaded_choices(self, name: str) -> list[str]:
        """Values a setting also accepts because of what this process loaded (a domain file's
        name); not part of the documented choices."""
        return []

    @model_validator(mode="after")
    def _check_choices(self) -> Self:
        problems = []
        for spec in type(self).specs():
            if spec.choices is None:
                continue
            value = getattr(self, spec.name)
            allowed = spec.allowed() + self._loaded_choices(spec.name)
            given = split_list(value) if spec.many else [value]
            unknown = [v for v in given if v not in allowed]
            if unknown or (spec.many and not given):
                what = f"has unknown {', '.join(map(repr, unknown))}" if unknown else "is empty"
                problems.append(f"{spec.named()} {what}: must be "
                                f"{'a comma-separated list of ' if spec.many else 'one of '}{', '.join(allowed)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def split_list(value: str | Iterable[str]) -> list[str]:
    """``"a, b"`` → ``["a", "b"]``; a sequence passes through."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [item.strip() for item in items if item.strip()]


def join_list(value: Any) -> Any:
    """A sequence of names as the comma-separated string a setting holds (a string passes)."""
    return value if isinstance(value, str) else ",".join(value)
