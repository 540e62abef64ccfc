"""The ``flywheel`` flags, derived from the settings groups: one flag per setting, its type,
help and default taken from the group (``settings.py``), so ``--help``, the Dagster
launchpad and the README cannot disagree. Flags default to "not given": only the flags a
user names override the environment's ``FLYWHEEL_*`` values and the defaults.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from typing import Any

from flywheel_assets.settings import GROUPS
from flywheel_assets.world.settings import SettingsGroup, SettingSpec

_DEST_SEPARATOR = "__"


def add_settings_flags(parser: argparse.ArgumentParser, keys: Iterable[str] | None = None, *,
                       skip: Iterable[str] = (), defaults: Mapping[str, Any] | None = None) -> None:
    """Flags for the settings of the groups ``keys`` (all by default), one argument group
    per settings group. ``skip`` names settings ("round_config.seed") the verb does not take;
    ``defaults`` gives a verb its own default for a setting ("policy.name": "teacher")."""
    skip, defaults = set(skip), dict(defaults or {})
    for key in keys or GROUPS:
        group = GROUPS[key]
        section = parser.add_argument_group(f"{group.group} settings ({key} in the Dagster launchpad)")
        for spec in group.specs():
            name = f"{key}.{spec.name}"
            if spec.flag is None or name in skip:
                continue
            _add(section, key, spec, defaults.get(name))


def _add(section: Any, key: str, spec: SettingSpec, verb_default: Any) -> None:
    help_text = f"{spec.help} (default: {spec.default!r}; env {spec.env})" if verb_default is None else (
        f"{spec.help} (default here: {verb_default!r}; {spec.env} does not apply to this verb)")
    if spec.choices is not None:
        help_text += f"; one of: {', '.join(spec.allowed())}"
    options: dict[str, Any] = {"dest": f"{key}{_DEST_SEPARATOR}{spec.name}", "default": verb_default, "help": help_text}
    if spec.type is bool:
        options["action"] = argparse.BooleanOptionalAction
    elif spec.repeat:
        options.update(action="append", metavar=spec.type.__name__.upper())
    else:
        options.update(type=spec.type, metavar=spec.type.__name__.upper())
    section.add_argument(spec.flag, **options)


def overrides_from(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """{resource key: {setting: value}} for exactly the settings flags that were given."""
    out: dict[str, dict[str, Any]] = {}
    for dest, value in vars(args).items():
        if _DEST_SEPARATOR in dest and value is not None:
            key, name = dest.split(_DEST_SEPARATOR, 1)
            if key in GROUPS:
                out.setdefault(key, {})[name] = ",".join(value) if isinstance(value, list) else value
    return out


def resolve(key: str, overrides: Mapping[str, Mapping[str, Any]]) -> SettingsGroup:
    """The group ``key`` as this command sees it: defaults, environment, then flags
    (SettingsError, naming the setting, when a value is invalid)."""
    return GROUPS[key].from_env(**dict(overrides.get(key, {})))
