"""Domain packs. Each module exposes ``DOMAINS``; ``DOMAINS`` maps names to the built-in packs.

Domain files (``world/domain_files.py``) join a process's rounds through ``register``:
``get_domain`` finds them beside the packs, while ``DOMAINS`` stays the built-in four (what
the embedded base model and its tokenizer are built from).
"""

from __future__ import annotations

from flywheel_assets.world.domains import banking, retail, telecom, travel
from flywheel_assets.world.domains.base import Domain

DOMAINS: dict[str, Domain] = {d.name: d for d in (banking.DOMAIN, retail.DOMAIN, telecom.DOMAIN, travel.DOMAIN)}
_REGISTERED: dict[str, Domain] = {}


def register(domain: Domain) -> None:
    """Make ``domain`` (a domain file's) known to ``get_domain``; a later registration of the
    same name replaces it (a stage binds its LLM tool simulator this way)."""
    if domain.name in DOMAINS:
        raise ValueError(f"domain {domain.name!r} is a built-in pack; give the domain file another name")
    _REGISTERED[domain.name] = domain


def registered() -> dict[str, Domain]:
    """The domain files' domains registered in this process."""
    return dict(_REGISTERED)


def get_domain(name: str) -> Domain:
    try:
        return DOMAINS[name] if name in DOMAINS else _REGISTERED[name]
    except KeyError:
        known = sorted(DOMAINS) + sorted(_REGISTERED)
        raise KeyError(f"unknown domain {name!r}; known: {', '.join(known)}") from None
