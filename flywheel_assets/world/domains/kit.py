"""The domain kit: the helpers every pack needs, so a pack states its domain and nothing else.

Rules a pack author must know (the kit enforces what it can):

- **Money.** Every amount a generator stores or a tool returns goes through ``money()``
  (rounded to cents). A generated amount should not end in a zero cent (``45.50`` reads as
  "45.5" in JSON but "45.50" in prose); draw cents from ``NONZERO_CENTS``.
- **Refusal reasons.** A condition's ``reason`` is the value the agent must say when it
  refuses; the rubric looks for it in the agent's text. It must be visible in the read
  tool's output, differ between the conditions that guard the same write, and not appear
  inside another such condition's description, so each refusal is told apart from the
  others. Avoid bare small numbers: they match inside ids.
- **Falsifiers.** ``falsify(rng, world, read_args)`` changes the world just enough that
  the condition fails while the rest of the task still holds; ``read_args`` are the read
  call's arguments exactly as the workflow made it. Use the ``rng`` passed in, nothing else.
- **Argument sources.** ``slot``, ``const`` and ``from_step("step name", *path)``; a step's
  name is its tool's unless ``.named(...)`` says otherwise. ``TaskDraft`` resolves names to
  positions and copies every source, so sharing a source between drafts is safe and an
  unknown, ambiguous or later step raises at build time.
- **Tools.** A tool is a pure function of the world and its arguments: no randomness (derive
  new ids from existing ones with ``first_free``), a ``ToolError`` for every failed
  precondition (``lookup``, ``require_status``). Arguments are validated against the tool's
  JSON schema before it runs, so types, enums and required keys need no check in the tool;
  its output is serialised at once, so it may return the world's own rows.
- **Rows.** A generator or tool that creates an owned row stores it with ``add_row``, which
  also lists its id with its owner.
- **Templates.** ``@template(name, *phrasings)`` on a builder ``(rng, world) -> TaskDraft``;
  ``need(pick(...))`` ends the build when the world has nothing that fits. Every workflow
  starts with ``verify_step`` (the domain's verification tool and the facts it takes). A
  phrasing's ``{placeholders}`` name context keys; no phrasing may state every required
  slot, and at least one must state none.
- **Choices.** Pick from dict views with ``pick`` (sorted), never ``rng.choice`` over an
  unsorted view: the same seed must give the same world. The order of a generator's or
  builder's draws is part of its output: reordering them changes every world or task.
- **Identifiers.** List ``ID_DIGITS`` and any pack-specific ``IdPattern`` (phone numbers,
  card digits, birth dates) in ``Domain.id_patterns``; the training data renames exactly those.
- **Policy.** The written policy is a document, not code: ``policies/<pack>.md`` beside the
  packs, read by ``read_policy``. The tools enforce it, so every fee, limit and allowed value it
  states must be the pack's own constant (tests/test_domains.py checks the ones it names).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from importlib import resources
from typing import Any, TypeVar

from flywheel_assets.world.domains import names
from flywheel_assets.world.domains.base import (
    Condition,
    DraftStep,
    IdPattern,
    TaskDraft,
    TaskTemplate,
    Tool,
    ToolError,
    pick,
    slot,
    step,
    tool,
)
from flywheel_assets.world.tasks import World

Falsifier = Callable[[random.Random, World, dict[str, Any]], None]
Builder = Callable[[random.Random, World], TaskDraft | None]
T = TypeVar("T")

NONZERO_CENTS = tuple(c for c in range(1, 100) if c % 10)
"""Cent values whose last digit is not zero (see the money rule above)."""

ID_DIGITS = IdPattern(r"(?<=[A-Za-z_])\d{3,}")
"""The digits of ids and emails: C123456, ali242@, card_4821."""


def read_policy(pack: str) -> str:
    """The pack's written policy: ``policies/<pack>.md`` (package data, so an installed wheel
    carries it), without the file's final newline."""
    document = resources.files(__package__) / "policies" / f"{pack}.md"
    return document.read_text(encoding="utf-8").removesuffix("\n")


class NoFittingEntity(Exception):
    """Raised by ``need`` inside a template's builder: this world has nothing the task fits."""


def need(value: T | None) -> T:
    """``value``, or stop building the task (the template then returns None): for the
    result of a ``pick`` that may find nothing."""
    if value is None:
        raise NoFittingEntity
    return value


def template(name: str, *phrasings: str) -> Callable[[Builder], TaskTemplate]:
    """Declare a task template on its builder: ``@template("cancel_order", "Hi, ...", ...)``.
    ``phrasings`` are instruction templates whose ``{placeholders}`` name context keys; at
    least one must leave every slot unstated."""

    def wrap(build: Builder) -> TaskTemplate:
        @functools.wraps(build)
        def guarded(rng: random.Random, world: World) -> TaskDraft | None:
            try:
                return build(rng, world)
            except NoFittingEntity:
                return None

        return TaskTemplate(name, guarded, phrasings)

    return wrap


def lookup(world: World, table: str, key: Any, what: str, normalize: Callable[[str], str] | None = str.strip,
           missing: str | None = None) -> dict[str, Any]:
    """The row ``world[table][normalize(key)]`` (by default the key stripped of whitespace;
    ``normalize=None`` looks the key up exactly as given), or a ToolError ``missing`` (by default
    "{what} {key} not found")."""
    row = world[table].get(normalize(str(key)) if normalize else key)
    if row is None:
        raise ToolError(missing or f"{what} {key} not found")
    return row


def ensure(holds: bool, message: str) -> None:
    """A tool's precondition: a ToolError with ``message`` (what the agent reads) unless it holds."""
    if not holds:
        raise ToolError(message)


def require_status(row: dict[str, Any], allowed: str | tuple[str, ...], label: str, field: str = "status", *,
                   say_allowed: bool = True) -> None:
    """A ToolError "{label} is {status}, not {allowed}" (without the "not …" part when
    ``say_allowed`` is false) unless ``row[field]`` is allowed."""
    allowed = (allowed,) if isinstance(allowed, str) else allowed
    if row[field] not in allowed:
        raise ToolError(f"{label} is {row[field]}" + (f", not {' or '.join(allowed)}" if say_allowed else ""))


def unique(taken: Any, make: Callable[[], str]) -> str:
    """A value from ``make`` that is not in ``taken`` (redrawn on a collision, which would
    otherwise silently overwrite an entity)."""
    while (value := make()) in taken:
        pass
    return value


def unique_code(rng: random.Random, taken: Any, prefix: str, digits: int) -> str:
    """A fresh id such as ``C123456`` (``names.code``) that is not in ``taken``."""
    return unique(taken, lambda: names.code(rng, prefix, digits))


def add_row(world: World, table: str, row_id: str, row: dict[str, Any], owner_ids: list[str]) -> dict[str, Any]:
    """Store ``row`` as ``world[table][row_id]`` and list its id with its owner (``owner_ids``, such
    as the customer's ``accounts``): ``owned`` conditions move a row between these lists."""
    world[table][row_id] = row
    owner_ids.append(row_id)
    return row


def first_free(start: int, following: Callable[[int], int], render: Callable[[int], str], taken: Any) -> str:
    """How a tool makes a new id or number without randomness, so a replay makes the same one:
    ``render`` of the first number after ``start`` in the sequence ``following`` steps through
    whose rendering is not in ``taken``."""
    number = following(start)
    while render(number) in taken:
        number = following(number)
    return render(number)


def verify_step(tool_name: str, *slot_names: str) -> DraftStep:
    """The authentication step every workflow starts with: the verification tool, called
    with the user's facts (each argument takes the slot of the same name, in this order)."""
    return step(tool_name, "authenticate", **{name: slot(name) for name in slot_names})


def find_user_by_email(table: str = "users", id_field: str = "user_id") -> Tool:
    """The ``find_user_id_by_email`` verification tool: the id of the row whose email matches."""

    @tool("find_user_id_by_email", "Find a user's id from their email address.",
          {"email": {"type": "string", "description": "The user's email address."}})
    def find(world: World, args: dict[str, Any]) -> Any:
        for row in world[table].values():
            if row["email"].lower() == args["email"].strip().lower():
                return row[id_field]
        raise ToolError("user not found")

    return find


def _reason(reason: str | Callable[[Any], Any]) -> Callable[[Any], Any]:
    return reason if callable(reason) else (lambda output: output[reason])


def condition(name: str, description: str, *, guards: tuple[str, ...], read_tool: str,
              check: Callable[[Any], bool], falsify: Falsifier, reason: str | Callable[[Any], Any],
              claim: str) -> Condition:
    """A condition on the read's output (a tier, an eligibility, a balance): ``reason`` is a
    field of that output or a function of it."""
    return Condition(name, description, guards=guards, read_tool=read_tool, check=check, falsify=falsify,
                     reason=_reason(reason), claim=claim)


def status_in(name: str, description: str, *, guards: tuple[str, ...], read_tool: str, allowed: tuple[str, ...],
              falsify: Falsifier, claim: str, field: str = "status") -> Condition:
    """The read row's ``field`` is one of ``allowed``; the refusal names the actual value."""
    return condition(name, description, guards=guards, read_tool=read_tool,
                     check=lambda row: row[field] in allowed, falsify=falsify, reason=field, claim=claim)


def owned(name: str, description: str, *, guards: tuple[str, ...], read_tool: str, table: str, key: str,
          owner_table: str, owner_field: str, claim: str, owner_list: str = "") -> Condition:
    """The row read (``world[table][read_args[key]]``) belongs to the verified user: its
    ``owner_field`` equals the verification call's output. The falsifier moves the row to
    another owner (and between the owners' ``owner_list``s, by default named like ``table``);
    the refusal names the row's id."""
    owner_list = owner_list or table

    def give_to_another(rng: random.Random, world: World, read_args: dict[str, Any]) -> None:
        row = world[table][read_args[key].strip()]
        other = pick(rng, [o for o in world[owner_table] if o != row[owner_field]])
        world[owner_table][row[owner_field]][owner_list].remove(row[key])
        world[owner_table][other][owner_list].append(row[key])
        row[owner_field] = other

    return Condition(name, description, guards=guards, read_tool=read_tool,
                     check=lambda row, owner: row[owner_field] == owner, falsify=give_to_another,
                     reason=_reason(key), claim=claim, needs_identity=True)


def set_fields(table: str, key: str, **values: Any) -> Falsifier:
    """A falsifier that sets fields of the row the read looked up (``read_args[key]``); a
    callable value is computed from the row as it was."""

    def falsify(rng: random.Random, world: World, read_args: dict[str, Any]) -> None:
        row = world[table][read_args[key].strip()]
        row.update({k: v(row) if callable(v) else v for k, v in values.items()})

    return falsify


def row_tool(name: str, description: str, table: str, key: str, what: str, key_description: str = "",
             normalize: Callable[[str], str] | None = str.strip, missing: str | None = None) -> Tool:
    """A read tool that returns one row by its id (``lookup``): the pack's plain "get" tools."""
    prop = {"type": "string", **({"description": key_description} if key_description else {})}

    @tool(name, description, {key: prop})
    def read(world: World, args: dict[str, Any]) -> Any:
        return lookup(world, table, args[key], what, normalize, missing)

    return read
