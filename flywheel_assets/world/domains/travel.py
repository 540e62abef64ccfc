"""Travel: an airline's members, their reservations and the dated flights they book.

Each flight entity is one dated departure; a reservation holds one one-way flight for one to
three passengers in one cabin. Fees and refunds follow the written policy and the tools
enforce it, so an agent that skips a rule meets a ToolError instead of a silent success.
"""

from __future__ import annotations

import copy
import datetime
import random
from typing import Any

from flywheel_assets.world.domains import names
from flywheel_assets.world.domains.base import (
    REPORT,
    Condition,
    Domain,
    Slot,
    TaskDraft,
    TaskTemplate,
    ToolError,
    const,
    from_step,
    money,
    pick,
    slot,
    step,
    tool,
    transfer_tool,
)
from flywheel_assets.world.tasks import World, WorkflowStep

# A fixed "today" keeps worlds reproducible and lets the policy say which flights are past.
TODAY = datetime.date(2025, 5, 15)
AIRPORTS = (
    ("ATL", "atlanta"), ("BOS", "boston"), ("DEN", "denver"), ("DFW", "dallas"),
    ("JFK", "new york"), ("LAX", "los angeles"), ("MIA", "miami"), ("ORD", "chicago"),
    ("SEA", "seattle"), ("SFO", "san francisco"),
)
CITY = dict(AIRPORTS)
CABINS = ("basic economy", "economy", "business")  # in rank order: upgrades only go right
CABIN_FARE = {"basic economy": 1.0, "economy": 1.35, "business": 3.2}
CABIN_SEATS = {"basic economy": 9, "economy": 24, "business": 8}
TIERS = ("regular", "silver", "gold")
FREE_BAGS = {"basic economy": 0, "economy": 1, "business": 2}
TIER_BAGS = {"regular": 0, "silver": 1, "gold": 2}
BAG_FEE, MAX_BAGS_PER_PASSENGER = 50.0, 4
INSURANCE_PER_PASSENGER, CANCEL_FEE_PER_PASSENGER = 30.0, 75.0
CANCEL_REASONS = ("change of plans", "illness")
BAG_WORDS = {1: "one more checked bag", 2: "two more checked bags"}
OPEN = ("on time", "delayed")  # flights that will still depart, so they can be booked or changed
# Weighted so most future flights are bookable but a few are disrupted.
FUTURE_STATUSES = ("on time",) * 6 + ("delayed",) * 2 + ("cancelled",)

POLICY = f"""\
- The current date is {TODAY.isoformat()}.
- Before looking anything up or changing anything, the user must be authenticated: find their
  user id from their email address. Only act on reservations whose user id is the
  authenticated user's.
- A reservation can be changed (cancelled, moved, upgraded, given bags or insurance) only while
  its status is "confirmed" and its flight has not landed. Bags, insurance and upgrades also
  need the flight to be "on time" or "delayed" (not departed, landed or cancelled).
- Cancellation: the reason must be "change of plans" or "illness". A basic economy reservation
  cannot be cancelled unless it has travel insurance or the airline cancelled the flight. The
  refund is the full amount paid if the reservation has travel insurance, is in business, the
  user is a gold member, or the airline cancelled the flight; otherwise a fee of ${CANCEL_FEE_PER_PASSENGER:.0f}
  per passenger is kept. Refunds go to the original payment method.
- Changing flights: basic economy reservations cannot change flights. The new flight must have
  the same origin and destination, be "on time" or "delayed", and have enough seats in the
  same cabin for every passenger. The fare difference for all passengers is charged to, or
  refunded to, the original payment method.
- Upgrades go only to a higher cabin (basic economy, then economy, then business), never down,
  and need enough seats for every passenger. The new cabin's current fare minus the fare paid,
  for all passengers, is charged to the original payment method.
- Checked bags: each passenger has free bags by cabin (basic economy 0, economy 1, business 2)
  plus membership (silver 1 more, gold 2 more). Each bag beyond that costs ${BAG_FEE:.0f}; at most
  {MAX_BAGS_PER_PASSENGER} checked bags per passenger. Ask the user which payment method from their
  profile pays the fee; a gift card needs enough balance.
- Travel insurance costs ${INSURANCE_PER_PASSENGER:.0f} per passenger, can be added only when the reservation
  has none, and is paid like bag fees.
- Never change a reservation's passengers. Never make up reservation ids, flight numbers,
  dates or amounts: read them with the tools.
- Transfer to a human agent only if the request cannot be handled within this policy.
- When the request is done, tell the user the outcome."""


def _unique(rng: random.Random, taken: dict[str, Any], prefix: str, digits: int) -> str:
    while (key := names.code(rng, prefix, digits)) in taken:
        pass
    return key


def generate_world(rng: random.Random, n_users: int = 12, n_routes: int = 6) -> World:
    world: World = {"users": {}, "reservations": {}, "flights": {}}
    routes = [(a, b) for a, _ in AIRPORTS for b, _ in AIRPORTS if a != b]
    for origin, destination in rng.sample(routes, n_routes):
        base_fare = rng.randint(79, 320)
        hour, minute = rng.randint(6, 20), rng.choice((0, 15, 30, 45))
        # Distinct dates per route: a search by route and date then finds at most one flight.
        for offset in sorted(rng.sample(range(-10, 46), rng.randint(3, 4))):
            number = _unique(rng, world["flights"], "AV", 4)
            status = "landed" if offset < 0 else rng.choice(FUTURE_STATUSES)
            fare = base_fare * rng.uniform(0.8, 1.25)
            world["flights"][number] = {
                "flight_number": number, "origin": origin, "destination": destination,
                "origin_city": CITY[origin], "destination_city": CITY[destination],
                "date": (TODAY + datetime.timedelta(days=offset)).isoformat(),
                "departure_time": f"{hour:02d}:{minute:02d}", "status": status,
                "prices": {c: money(fare * CABIN_FARE[c]) for c in CABINS},
                "seats_available": {c: 0 if status == "landed" else rng.randint(0, n)
                                    for c, n in CABIN_SEATS.items()},
            }
    emails: list[str] = []
    for _ in range(n_users):
        first, last = names.person(rng)
        uid, email = f"{first}_{last}_{rng.randint(1000, 9999)}", names.email(first, last, rng)
        if uid in world["users"] or email in emails:
            continue
        emails.append(email)
        card = names.code(rng, "credit_card_", 4)
        methods: dict[str, Any] = {card: {"type": "credit card", "last_four": card[-4:]}}
        if rng.random() < 0.6:
            methods[names.code(rng, "gift_card_", 4)] = {"type": "gift card", "balance": money(rng.randint(0, 300))}
        user = world["users"][uid] = {
            "user_id": uid, "name": f"{first} {last}", "email": email, "membership": rng.choice(TIERS),
            "payment_methods": methods, "reservations": [],
        }
        for _ in range(rng.randint(1, 3)):
            flight = world["flights"][pick(rng, list(world["flights"]))]
            rid = _unique(rng, world["reservations"], "R", 6)
            cabin = rng.choice(("basic economy", "economy", "economy", "business"))
            passengers = [{"first_name": first, "last_name": last}] + [
                dict(zip(("first_name", "last_name"), names.person(rng))) for _ in range(rng.choice((0, 0, 1, 2)))]
            pax, insured = len(passengers), rng.random() < 0.3
            price = money(flight["prices"][cabin] * rng.uniform(0.85, 1.1))  # booked at an older fare
            total = money(pax * (price + (INSURANCE_PER_PASSENGER if insured else 0.0)))
            status = "completed" if flight["status"] == "landed" else rng.choice(("confirmed",) * 4 + ("cancelled",))
            world["reservations"][rid] = {
                "reservation_id": rid, "user_id": uid, "flight_number": flight["flight_number"],
                "origin": flight["origin"], "destination": flight["destination"], "date": flight["date"],
                "cabin": cabin, "passengers": passengers,
                "checked_bags": rng.randint(0, (FREE_BAGS[cabin] + TIER_BAGS[user["membership"]]) * pax),
                "travel_insurance": insured, "payment_method_id": card, "price_per_passenger": price,
                "total_paid": total, "status": status, "refunded": total if status == "cancelled" else 0.0,
            }
            user["reservations"].append(rid)
    return world


def _reservation(world: World, rid: str) -> dict[str, Any]:
    res = world["reservations"].get(rid.strip())
    if res is None:
        raise ToolError(f"reservation {rid} not found")
    return res


def _flight(world: World, number: str) -> dict[str, Any]:
    flight = world["flights"].get(number.strip().upper())
    if flight is None:
        raise ToolError(f"flight {number} not found")
    return flight


def _changeable(world: World, rid: str, *, flight_must_fly: bool = True) -> tuple[dict, dict, dict]:
    """The reservation, its flight and its user, if the reservation may still be changed."""
    res = _reservation(world, rid)
    flight = world["flights"][res["flight_number"]]
    if res["status"] != "confirmed":
        raise ToolError(f"reservation {res['reservation_id']} is {res['status']}, not confirmed")
    if flight["status"] == "landed" or (flight_must_fly and flight["status"] not in OPEN):
        raise ToolError(f"flight {flight['flight_number']} is {flight['status']}")
    return res, flight, world["users"][res["user_id"]]


def _check_payment(user: dict[str, Any], method_id: str, amount: float) -> dict[str, Any]:
    method = user["payment_methods"].get(method_id.strip())
    if method is None:
        raise ToolError("payment method not on file")
    if method["type"] == "gift card" and method["balance"] < amount:
        raise ToolError(f"gift card balance {method['balance']} is less than {amount}")
    return method


def _pay(method: dict[str, Any], amount: float) -> None:
    if method["type"] == "gift card":
        method["balance"] = money(method["balance"] - amount)


def bag_fee(world: World, res: dict[str, Any], extra: int) -> float:
    allowance = (FREE_BAGS[res["cabin"]] + TIER_BAGS[world["users"][res["user_id"]]["membership"]]) * len(res["passengers"])
    paid_before = max(0, res["checked_bags"] - allowance)
    return money(BAG_FEE * (max(0, res["checked_bags"] + extra - allowance) - paid_before))


def cancel_refund(world: World, res: dict[str, Any], flight: dict[str, Any]) -> float:
    full = (res["travel_insurance"] or res["cabin"] == "business" or flight["status"] == "cancelled"
            or world["users"][res["user_id"]]["membership"] == "gold")
    fee = 0.0 if full else CANCEL_FEE_PER_PASSENGER * len(res["passengers"])
    return money(max(0.0, res["total_paid"] - fee))


@tool("find_user_id_by_email", "Find a user's id from their email address.",
      {"email": {"type": "string", "description": "The user's email address."}})
def find_user_id_by_email(world: World, args: dict[str, Any]) -> Any:
    for user in world["users"].values():
        if user["email"].lower() == args["email"].strip().lower():
            return user["user_id"]
    raise ToolError("user not found")


@tool("get_user_details", "Get a user's profile: name, membership tier, payment methods and reservation ids.",
      {"user_id": {"type": "string"}})
def get_user_details(world: World, args: dict[str, Any]) -> Any:
    user = world["users"].get(args["user_id"].strip())
    if user is None:
        raise ToolError("user not found")
    return copy.deepcopy(user)


@tool("get_reservation_details",
      "Get a reservation: user, flight, route, date, cabin, passengers, bags, insurance, payment and status.",
      {"reservation_id": {"type": "string", "description": "The reservation id, such as R123456."}})
def get_reservation_details(world: World, args: dict[str, Any]) -> Any:
    return copy.deepcopy(_reservation(world, args["reservation_id"]))


@tool("get_flight_status", "Get a flight's route, date, departure time, status, current fares and seats left.",
      {"flight_number": {"type": "string", "description": "The flight number, such as AV1234."}})
def get_flight_status(world: World, args: dict[str, Any]) -> Any:
    return copy.deepcopy(_flight(world, args["flight_number"]))


@tool("search_flights", "List bookable flights (on time or delayed) between two airports on one date.",
      {"origin": {"type": "string", "description": "Origin airport code, such as JFK."},
       "destination": {"type": "string", "description": "Destination airport code, such as LAX."},
       "date": {"type": "string", "description": "The date, as YYYY-MM-DD."}})
def search_flights(world: World, args: dict[str, Any]) -> Any:
    route = (args["origin"].strip().upper(), args["destination"].strip().upper(), args["date"].strip())
    found = [f for f in world["flights"].values()
             if (f["origin"], f["destination"], f["date"]) == route and f["status"] in OPEN]
    keep = ("flight_number", "origin", "destination", "date", "departure_time", "status", "prices", "seats_available")
    return [{k: copy.deepcopy(f[k]) for k in keep} for f in sorted(found, key=lambda f: f["departure_time"])]


@tool("cancel_reservation",
      "Cancel a confirmed reservation whose flight has not landed; the refund goes to the original payment method.",
      {"reservation_id": {"type": "string"}, "reason": {"type": "string", "enum": list(CANCEL_REASONS)}},
      writes=True)
def cancel_reservation(world: World, args: dict[str, Any]) -> Any:
    res, flight, _ = _changeable(world, args["reservation_id"], flight_must_fly=False)
    if res["cabin"] == "basic economy" and not res["travel_insurance"] and flight["status"] != "cancelled":
        raise ToolError("a basic economy reservation without travel insurance cannot be cancelled")
    refund = cancel_refund(world, res, flight)
    if flight["status"] in OPEN:
        flight["seats_available"][res["cabin"]] += len(res["passengers"])
    res.update(status="cancelled", cancel_reason=args["reason"], refunded=refund)
    return {"reservation_id": res["reservation_id"], "status": "cancelled", "refund_amount": refund,
            "refund_to": res["payment_method_id"]}


@tool("change_reservation_flight",
      "Move a confirmed reservation to another flight on the same route, same cabin; the fare difference "
      "is charged or refunded to the original payment method.",
      {"reservation_id": {"type": "string"}, "flight_number": {"type": "string", "description": "The new flight."}},
      writes=True)
def change_reservation_flight(world: World, args: dict[str, Any]) -> Any:
    res, old, _ = _changeable(world, args["reservation_id"], flight_must_fly=False)
    new, pax, cabin = _flight(world, args["flight_number"]), len(res["passengers"]), res["cabin"]
    if cabin == "basic economy":
        raise ToolError("basic economy reservations cannot change flights")
    if new["flight_number"] == old["flight_number"]:
        raise ToolError(f"reservation is already on flight {new['flight_number']}")
    if (new["origin"], new["destination"]) != (res["origin"], res["destination"]):
        raise ToolError("the new flight must have the same origin and destination")
    if new["status"] not in OPEN:
        raise ToolError(f"flight {new['flight_number']} is {new['status']}")
    if new["seats_available"][cabin] < pax:
        raise ToolError(f"not enough {cabin} seats on flight {new['flight_number']}")
    diff = money((new["prices"][cabin] - res["price_per_passenger"]) * pax)
    new["seats_available"][cabin] -= pax
    if old["status"] in OPEN:
        old["seats_available"][cabin] += pax
    res.update(flight_number=new["flight_number"], date=new["date"], price_per_passenger=new["prices"][cabin],
               total_paid=money(res["total_paid"] + diff))
    return {"reservation_id": res["reservation_id"], "flight_number": new["flight_number"], "date": new["date"],
            "departure_time": new["departure_time"], "fare_difference": abs(diff),
            "direction": "charged" if diff >= 0 else "refunded", "payment_method_id": res["payment_method_id"]}


@tool("upgrade_cabin", "Upgrade every passenger of a confirmed reservation to a higher cabin; the fare "
      "difference is charged to the original payment method.",
      {"reservation_id": {"type": "string"}, "cabin": {"type": "string", "enum": list(CABINS)}},
      writes=True)
def upgrade_cabin(world: World, args: dict[str, Any]) -> Any:
    res, flight, _ = _changeable(world, args["reservation_id"])
    cabin, pax = args["cabin"], len(res["passengers"])
    if CABINS.index(cabin) <= CABINS.index(res["cabin"]):
        raise ToolError(f"{cabin} is not higher than {res['cabin']}")
    if flight["seats_available"][cabin] < pax:
        raise ToolError(f"not enough {cabin} seats on flight {flight['flight_number']}")
    cost = money(max(0.0, flight["prices"][cabin] - res["price_per_passenger"]) * pax)
    flight["seats_available"][cabin] -= pax
    flight["seats_available"][res["cabin"]] += pax
    res.update(cabin=cabin, price_per_passenger=flight["prices"][cabin], total_paid=money(res["total_paid"] + cost))
    return {"reservation_id": res["reservation_id"], "cabin": cabin, "amount_charged": cost,
            "payment_method_id": res["payment_method_id"]}


@tool("add_checked_bags", "Add checked bags to a confirmed reservation; bags beyond the free allowance "
      "are paid with the given payment method from the user's profile.",
      {"reservation_id": {"type": "string"},
       "additional_bags": {"type": "integer", "minimum": 1, "description": "How many bags to add."},
       "payment_method_id": {"type": "string"}},
      writes=True)
def add_checked_bags(world: World, args: dict[str, Any]) -> Any:
    res, _, user = _changeable(world, args["reservation_id"])
    extra = args["additional_bags"]
    if res["checked_bags"] + extra > MAX_BAGS_PER_PASSENGER * len(res["passengers"]):
        raise ToolError(f"at most {MAX_BAGS_PER_PASSENGER} checked bags per passenger")
    fee = bag_fee(world, res, extra)
    method = _check_payment(user, args["payment_method_id"], fee)
    _pay(method, fee)
    res.update(checked_bags=res["checked_bags"] + extra, total_paid=money(res["total_paid"] + fee))
    return {"reservation_id": res["reservation_id"], "checked_bags": res["checked_bags"], "fee_charged": fee}


@tool("add_travel_insurance", "Add travel insurance for every passenger of a confirmed reservation, paid "
      "with the given payment method from the user's profile.",
      {"reservation_id": {"type": "string"}, "payment_method_id": {"type": "string"}},
      writes=True)
def add_travel_insurance(world: World, args: dict[str, Any]) -> Any:
    res, _, user = _changeable(world, args["reservation_id"])
    if res["travel_insurance"]:
        raise ToolError(f"reservation {res['reservation_id']} already has travel insurance")
    cost = money(INSURANCE_PER_PASSENGER * len(res["passengers"]))
    method = _check_payment(user, args["payment_method_id"], cost)
    _pay(method, cost)
    res.update(travel_insurance=True, total_paid=money(res["total_paid"] + cost))
    return {"reservation_id": res["reservation_id"], "travel_insurance": True, "amount_charged": cost}


def _bookings(world: World, *statuses: str, flying: tuple[str, ...] = OPEN) -> list[tuple[dict, dict, dict]]:
    """(user, reservation, flight) for reservations in ``statuses`` whose flight status is in ``flying``."""
    return [(world["users"][r["user_id"]], r, world["flights"][r["flight_number"]])
            for r in world["reservations"].values()
            if r["status"] in statuses and world["flights"][r["flight_number"]]["status"] in flying]


def _context(user: dict[str, Any], res: dict[str, Any], flight: dict[str, Any]) -> dict[str, Any]:
    return {"email": user["email"], "name": user["name"], "reservation_id": res["reservation_id"],
            "origin_city": flight["origin_city"], "destination_city": flight["destination_city"]}


def _payable(user: dict[str, Any], amount: float) -> list[str]:
    return [m for m, d in sorted(user["payment_methods"].items()) if d["type"] != "gift card" or d["balance"] >= amount]


def _fare_cancellable(res: dict[str, Any]) -> bool:
    return res["cabin"] != "basic economy" or res["travel_insurance"]


def _read_flight(purpose: str = "check the flight is on time or delayed") -> WorkflowStep:
    return step("get_flight_status", purpose, flight_number=from_step(1, "flight_number"))


def _start(purpose: str = "check the reservation can be changed") -> list[WorkflowStep]:
    """Authenticate, then read the reservation; fresh objects so no two drafts share a step."""
    return [step("find_user_id_by_email", "authenticate", email=slot("email")),
            step("get_reservation_details", purpose, reservation_id=slot("reservation_id"))]


def build_cancel(rng: random.Random, world: World) -> TaskDraft | None:
    # Only fares the reservation itself shows to be cancellable (not basic economy, or insured), so
    # the ``cancellable_fare`` condition holds; a basic economy fare on an airline-cancelled flight
    # is cancellable too, but the reservation read alone does not show it.
    found = pick(rng, [b for b in _bookings(world, "confirmed", flying=OPEN + ("cancelled",))
                       if _fare_cancellable(b[1])])
    if found is None:
        return None
    user, res, flight = found
    reason = rng.choice(CANCEL_REASONS)
    return TaskDraft(
        goal=f"Cancel reservation {res['reservation_id']} because of {reason}.",
        context={**_context(user, res, flight), "reason": reason},
        workflow=[*_start(), step("cancel_reservation", "cancel", reservation_id=slot("reservation_id"),
                                   reason=slot("reason"))],
        outcome=[slot("reservation_id"), const("cancelled"), from_step(2, "refund_amount")],
    )


def build_change(rng: random.Random, world: World) -> TaskDraft | None:
    options = []
    for user, res, flight in _bookings(world, "confirmed", flying=OPEN + ("cancelled",)):
        for new in world["flights"].values():
            if (res["cabin"] != "basic economy" and new["flight_number"] != flight["flight_number"]
                    and (new["origin"], new["destination"]) == (flight["origin"], flight["destination"])
                    and new["status"] in OPEN and new["seats_available"][res["cabin"]] >= len(res["passengers"])):
                options.append((user, res, flight, new))
    found = pick(rng, options)
    if found is None:
        return None
    user, res, flight, new = found
    return TaskDraft(
        goal=f"Move reservation {res['reservation_id']} to flight {new['flight_number']} on {new['date']}.",
        context={**_context(user, res, flight), "new_date": new["date"]},
        workflow=[*_start(),
                  step("search_flights", "find the flight on the new date", origin=from_step(1, "origin"),
                       destination=from_step(1, "destination"), date=slot("new_date")),
                  step("change_reservation_flight", "move the reservation", reservation_id=slot("reservation_id"),
                       flight_number=from_step(2, 0, "flight_number"))],
        outcome=[slot("reservation_id"), from_step(3, "flight_number"), from_step(3, "fare_difference")],
    )


def build_bags(rng: random.Random, world: World) -> TaskDraft | None:
    options = []
    for user, res, flight in _bookings(world, "confirmed"):
        for extra in (1, 2):
            fee = bag_fee(world, res, extra)
            # A free bag needs no payment choice, so only fee-paying cases make the task.
            if fee > 0 and res["checked_bags"] + extra <= MAX_BAGS_PER_PASSENGER * len(res["passengers"]):
                options += [(user, res, flight, extra, m) for m in _payable(user, fee)]
    found = pick(rng, options)
    if found is None:
        return None
    user, res, flight, extra, method = found
    return TaskDraft(
        goal=f"Add {extra} checked bag(s) to reservation {res['reservation_id']}, paying with {method}.",
        # The count is stated up front in words, not hidden: a bare 1 or 2 would be found by
        # substring in any id or email, so it cannot be checked as a fact the agent asked for.
        context={**_context(user, res, flight), "bags": BAG_WORDS[extra], "payment_method": method},
        workflow=[*_start(), _read_flight(),
                  step("add_checked_bags", "add the bags", reservation_id=slot("reservation_id"),
                       additional_bags=const(extra), payment_method_id=slot("payment_method"))],
        outcome=[slot("reservation_id"), from_step(3, "checked_bags"), from_step(3, "fee_charged")],
    )


def build_upgrade(rng: random.Random, world: World) -> TaskDraft | None:
    found = pick(rng, [(u, r, f, c) for u, r, f in _bookings(world, "confirmed") for c in CABINS
                       if CABINS.index(c) > CABINS.index(r["cabin"]) and f["seats_available"][c] >= len(r["passengers"])])
    if found is None:
        return None
    user, res, flight, cabin = found
    return TaskDraft(
        goal=f"Upgrade reservation {res['reservation_id']} from {res['cabin']} to {cabin}.",
        context={**_context(user, res, flight), "cabin": cabin},
        workflow=[*_start(), _read_flight(),
                  step("upgrade_cabin", "upgrade", reservation_id=slot("reservation_id"), cabin=slot("cabin"))],
        outcome=[slot("reservation_id"), slot("cabin"), from_step(3, "amount_charged")],
    )


def build_insurance(rng: random.Random, world: World) -> TaskDraft | None:
    found = pick(rng, [(u, r, f, m) for u, r, f in _bookings(world, "confirmed") if not r["travel_insurance"]
                       for m in _payable(u, INSURANCE_PER_PASSENGER * len(r["passengers"]))])
    if found is None:
        return None
    user, res, flight, method = found
    return TaskDraft(
        goal=f"Add travel insurance to reservation {res['reservation_id']}, paying with {method}.",
        context={**_context(user, res, flight), "payment_method": method},
        workflow=[*_start(), _read_flight(),
                  step("add_travel_insurance", "insure", reservation_id=slot("reservation_id"),
                       payment_method_id=slot("payment_method"))],
        outcome=[slot("reservation_id"), from_step(3, "amount_charged")],
    )


def build_status(rng: random.Random, world: World) -> TaskDraft | None:
    found = pick(rng, _bookings(world, "confirmed", flying=OPEN + ("cancelled",)))
    if found is None:
        return None
    user, res, flight = found
    return TaskDraft(
        goal=f"Find out the status of flight {flight['flight_number']} on reservation {res['reservation_id']}.",
        context=_context(user, res, flight),
        workflow=[*_start("find the flight"),
                  step("get_flight_status", "read the status", flight_number=from_step(1, "flight_number"))],
        outcome=[from_step(1, "flight_number"), from_step(2, "status")],
    )


def _give_to_another_user(rng: random.Random, world: World, read_args: dict[str, Any]) -> None:
    res = world["reservations"][read_args["reservation_id"].strip()]
    other = pick(rng, [u for u in world["users"] if u != res["user_id"]])
    world["users"][res["user_id"]]["reservations"].remove(res["reservation_id"])
    world["users"][other]["reservations"].append(res["reservation_id"])
    res["user_id"] = other


def _cancel_reservation_record(rng: random.Random, world: World, read_args: dict[str, Any]) -> None:
    res = world["reservations"][read_args["reservation_id"].strip()]
    res.update(status="cancelled", refunded=res["total_paid"])  # as a cancelled booking looks


def _make_basic_uninsured(rng: random.Random, world: World, read_args: dict[str, Any]) -> None:
    res = world["reservations"][read_args["reservation_id"].strip()]
    res.update(cabin="basic economy", travel_insurance=False)
    flight = world["flights"][res["flight_number"]]
    if flight["status"] == "cancelled":  # an airline-cancelled flight would make it cancellable again
        flight["status"] = "on time"


def _make_basic(rng: random.Random, world: World, read_args: dict[str, Any]) -> None:
    world["reservations"][read_args["reservation_id"].strip()]["cabin"] = "basic economy"


def _depart_flight(rng: random.Random, world: World, read_args: dict[str, Any]) -> None:
    """The flight left today (not "cancelled": that word must stay the reservation's own reason)."""
    flight = world["flights"][read_args["flight_number"].strip().upper()]
    flight.update(status="departed", date=TODAY.isoformat())
    for res in world["reservations"].values():
        if res["flight_number"] == flight["flight_number"]:
            res["date"] = flight["date"]


# Refusal reasons differ between conditions guarding the same write ("cancelled", "basic economy",
# "departed", the reservation id), and no description contains another's reason, so each branch's
# refusal is told apart from the others'.
CONDITIONS = (
    Condition("reservation_owned", "the reservation belongs to the authenticated user",
              guards=(REPORT, "cancel_reservation", "change_reservation_flight", "upgrade_cabin",
                      "add_checked_bags", "add_travel_insurance"),
              read_tool="get_reservation_details", check=lambda res, user_id: res["user_id"] == user_id,
              falsify=_give_to_another_user, reason=lambda res: res["reservation_id"],
              claim="That booking is mine, I made it from my own account.", needs_identity=True),
    Condition("reservation_confirmed", "the reservation is confirmed",
              guards=("cancel_reservation", "change_reservation_flight", "upgrade_cabin", "add_checked_bags",
                      "add_travel_insurance"),
              read_tool="get_reservation_details",
              check=lambda res: res["status"] == "confirmed", falsify=_cancel_reservation_record,
              reason=lambda res: res["status"],
              claim="My booking is still active, I looked at it this morning, so please just go ahead."),
    Condition("cancellable_fare", "the fare allows cancelling: it is not basic economy, or it has travel insurance",
              guards=("cancel_reservation",), read_tool="get_reservation_details",
              check=_fare_cancellable, falsify=_make_basic_uninsured,
              reason=lambda res: res["cabin"],
              claim="My ticket is fully flexible and I'm covered for cancellations, so cancelling is no problem."),
    Condition("not_basic_economy", "the reservation is not basic economy",
              guards=("change_reservation_flight",), read_tool="get_reservation_details",
              check=lambda res: res["cabin"] != "basic economy", falsify=_make_basic,
              reason=lambda res: res["cabin"],
              claim="I didn't book a basic economy fare, so I'm allowed to change my flight."),
    Condition("flight_operating", 'the flight is "on time" or "delayed"',
              guards=("upgrade_cabin", "add_checked_bags", "add_travel_insurance"), read_tool="get_flight_status",
              check=lambda flight: flight["status"] in OPEN, falsify=_depart_flight,
              reason=lambda flight: flight["status"],
              claim="My flight is definitely still going ahead, I got a reminder email about it, so go ahead."),
)


DOMAIN = Domain(
    name="travel",
    description="an airline's reservations desk",
    policy=POLICY,
    tools=(find_user_id_by_email, get_user_details, get_reservation_details, get_flight_status, search_flights,
           cancel_reservation, change_reservation_flight, upgrade_cabin, add_checked_bags, add_travel_insurance,
           transfer_tool()),
    slots=(
        Slot("email", ("email", "e-mail", "email address")),
        Slot("reservation_id", ("reservation id", "reservation number", "booking number", "booking reference",
                                "confirmation number", "reservation code", "which reservation", "which booking")),
        Slot("reason", ("reason for cancelling", "reason", "why", "cancellation reason")),
        Slot("new_date", ("new travel date", "new date", "which date", "what date", "date", "which day", "what day")),
        Slot("payment_method", ("payment method", "pay with", "pay for", "which card", "payment")),
        Slot("cabin", ("cabin class", "cabin", "which class", "class", "upgrade to")),
    ),
    templates=(
        TaskTemplate("cancel_reservation", build_cancel, (
            "Hi, I need to cancel a flight I booked.",
            "Please cancel reservation {reservation_id}.",
            "Hello, I'm {name}. I can't make my trip ({reason}), so I'd like to cancel it.",
            "My email is {email}; I want to cancel my booking from {origin_city} to {destination_city}.",
        )),
        TaskTemplate("change_flight", build_change, (
            "I need to move my flight from {origin_city} to {destination_city} to another day.",
            "Can you move reservation {reservation_id} to {new_date}?",
            "Hi, I'm {name}. I'd like to fly on {new_date} instead of my current date.",
            "Hello, I want to change the flight on one of my bookings.",
        )),
        TaskTemplate("add_checked_bags", build_bags, (
            "I'd like to add {bags} to my trip.",
            "Please add {bags} to reservation {reservation_id}.",
            "Hi, my email is {email}. I need {bags} on one of my bookings.",
            "Hello, I'm {name}; I'm bringing {bags} on my {origin_city} to {destination_city} flight.",
        )),
        TaskTemplate("upgrade_cabin", build_upgrade, (
            "Can I get a better seat on my upcoming trip?",
            "I'd like to upgrade reservation {reservation_id}.",
            "Hi, I'm {name}. Please upgrade my booking to {cabin}.",
        )),
        TaskTemplate("add_travel_insurance", build_insurance, (
            "I'd like to add travel insurance to a booking.",
            "Please add travel insurance to reservation {reservation_id}.",
            "Hi, my email is {email}. Can I still insure my trip to {destination_city}?",
        )),
        TaskTemplate("flight_status", build_status, (
            "Is my flight on time?",
            "Hi, what's the status of the flight on reservation {reservation_id}?",
            "Hello, I'm {name}. Can you check on my flight to {destination_city}?",
        )),
    ),
    generate_world=generate_world,
    verification_tools=("find_user_id_by_email",),
    conditions=CONDITIONS,
)
