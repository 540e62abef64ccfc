"""Shared pools of realistic values for the world generators."""

from __future__ import annotations

import random

FIRST_NAMES = (
    "amelia", "noah", "olivia", "liam", "emma", "mateo", "ava", "lucas", "sofia", "ethan",
    "mia", "yusuf", "chloe", "arjun", "isabella", "omar", "grace", "kenji", "zara", "diego",
    "hannah", "felix", "priya", "leo", "nora", "ivan", "lena", "samuel", "aisha", "hugo",
)
LAST_NAMES = (
    "smith", "garcia", "kim", "nguyen", "patel", "johnson", "muller", "rossi", "silva",
    "tanaka", "brown", "lopez", "wilson", "novak", "khan", "martin", "cohen", "ali",
    "andersen", "dubois", "moreau", "schmidt", "ivanova", "okafor", "costa", "reyes",
)
CITIES = (
    ("springfield", "IL"), ("portland", "OR"), ("austin", "TX"), ("denver", "CO"),
    ("madison", "WI"), ("raleigh", "NC"), ("boise", "ID"), ("tucson", "AZ"),
    ("albany", "NY"), ("columbus", "OH"), ("fresno", "CA"), ("richmond", "VA"),
)
STREETS = (
    "oak street", "maple avenue", "cedar lane", "pine road", "elm street", "lake drive",
    "hill road", "park avenue", "river street", "sunset boulevard", "main street",
)


def person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)


def address(rng: random.Random) -> dict[str, str]:
    city, state = rng.choice(CITIES)
    return {
        "street": f"{rng.randint(1, 999)} {rng.choice(STREETS)}",
        "city": city,
        "state": state,
        "zip": f"{rng.randint(10000, 99999)}",
    }


def email(first: str, last: str, rng: random.Random) -> str:
    return f"{first}.{last}{rng.randint(1, 999)}@example.com"


def code(rng: random.Random, prefix: str, digits: int = 6) -> str:
    return f"{prefix}{rng.randint(10 ** (digits - 1), 10**digits - 1)}"
