"""Domain packs. Each module exposes ``DOMAIN``; ``DOMAINS`` maps names to packs."""

from __future__ import annotations

from flywheel_assets.world.domains import banking, retail, telecom, travel
from flywheel_assets.world.domains.base import Domain

DOMAINS: dict[str, Domain] = {d.name: d for d in (banking.DOMAIN, retail.DOMAIN, telecom.DOMAIN, travel.DOMAIN)}


def get_domain(name: str) -> Domain:
    try:
        return DOMAINS[name]
    except KeyError:
        raise KeyError(f"unknown domain {name!r}; known: {', '.join(sorted(DOMAINS))}") from None
