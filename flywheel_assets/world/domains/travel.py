"""Travel: an airline's members, their reservations and the dated flights they book. Each flight
is one dated departure; a reservation holds one one-way flight for one to three passengers in one
cabin. The tools enforce the policy's fees and refunds: an agent that skips a rule meets a ToolError."""

from __future__ import annotations

import datetime
import random
from typing import Any

from flywheel_assets.world.domains import names
from flywheel_assets.world.domains.base import (
    REPORT, Domain, Slot, TaskDraft, const, from_step, money, pick, slot, step, tool, transfer_tool,
)
from flywheel_assets.world.domains.kit import (
    ID_DIGITS, add_row, condition, ensure, find_user_by_email, lookup, need, owned, read_policy, require_status,
    row_tool, set_fields, status_in, template, unique_code, verify_step,
)
from flywheel_assets.world.tasks import World

# A fixed "today" keeps worlds reproducible and lets the policy say which flights are past. The policy
# (policies/travel.md) states today, the fees and the bag allowances; tests/test_domains.py checks it does.
TODAY = datetime.date(2025, 5, 15)
AIRPORTS = (("ATL", "atlanta"), ("BOS", "boston"), ("DEN", "denver"), ("DFW", "dallas"), ("JFK", "new york"),
            ("LAX", "los angeles"), ("MIA", "miami"), ("ORD", "chicago"), ("SEA", "seattle"), ("SFO", "san francisco"))
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


def generate_world(rng: random.Random, n_users: int = 12, n_routes: int = 6) -> World:
    world: World = {"users": {}, "reservations": {}, "flights": {}}
    routes = [(a, b) for a, _ in AIRPORTS for b, _ in AIRPORTS if a != b]
    for origin, destination in rng.sample(routes, n_routes):
        base_fare = rng.randint(79, 320)
        hour, minute = rng.randint(6, 20), rng.choice((0, 15, 30, 45))
        # Distinct dates per route: a search by route and date then finds at most one flight.
        for offset in sorted(rng.sample(range(-10, 46), rng.randint(3, 4))):
            number = unique_code(rng, world["flights"], "AV", 4)
            status = "landed" if offset < 0 else rng.choice(FUTURE_STATUSES)
            fare = base_fare * rng.uniform(0.8, 1.25)
            world["flights"][number] = {
                "flight_number": number, "origin": origin, "destination": destination, "origin_city": CITY[origin],
                "destination_city": CITY[destination], "date": (TODAY + datetime.timedelta(days=offset)).isoformat(),
                "departure_time": f"{hour:02d}:{minute:02d}", "status": status,
                "prices": {c: money(fare * CABIN_FARE[c]) for c in CABINS},
                "seats_available": {c: 0 if status == "landed" else rng.randint(0, n) for c, n in CABIN_SEATS.items()}}
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
        user = world["users"][uid] = {"user_id": uid, "name": f"{first} {last}", "email": email,
                                      "membership": rng.choice(TIERS), "payment_methods": methods, "reservations": []}
        for _ in range(rng.randint(1, 3)):
            flight = world["flights"][pick(rng, list(world["flights"]))]
            rid = unique_code(rng, world["reservations"], "R", 6)
            cabin = rng.choice(("basic economy", "economy", "economy", "business"))
            passengers = [{"first_name": first, "last_name": last}] + [
                dict(zip(("first_name", "last_name"), names.person(rng))) for _ in range(rng.choice((0, 0, 1, 2)))]
            pax, insured = len(passengers), rng.random() < 0.3
            price = money(flight["prices"][cabin] * rng.uniform(0.85, 1.1))  # booked at an older fare
            total = money(pax * (price + (INSURANCE_PER_PASSENGER if insured else 0.0)))
            status = "completed" if flight["status"] == "landed" else rng.choice(("confirmed",) * 4 + ("cancelled",))
            free_bags = (FREE_BAGS[cabin] + TIER_BAGS[user["membership"]]) * pax
            add_row(world, "reservations", rid, {
                "reservation_id": rid, "user_id": uid, "flight_number": flight["flight_number"], "cabin": cabin,
                "origin": flight["origin"], "destination": flight["destination"], "date": flight["date"],
                "passengers": passengers, "checked_bags": rng.randint(0, free_bags), "travel_insurance": insured,
                "payment_method_id": card, "price_per_passenger": price, "total_paid": total, "status": status,
                "refunded": total if status == "cancelled" else 0.0}, user["reservations"])
    return world


def _changeable(world: World, rid: str, *, flight_must_fly: bool = True) -> tuple[dict, dict, dict]:
    """The reservation, its flight and its user, if the reservation may still be changed."""
    res = lookup(world, "reservations", rid, "reservation")
    flight = world["flights"][res["flight_number"]]
    require_status(res, "confirmed", f"reservation {res['reservation_id']}")
    ensure(flight["status"] != "landed" and (flight["status"] in OPEN or not flight_must_fly),
           f"flight {flight['flight_number']} is {flight['status']}")
    return res, flight, world["users"][res["user_id"]]


def _charge(user: dict[str, Any], method_id: str, amount: float) -> None:
    """Pay ``amount`` with a payment method from the user's profile (a gift card needs the balance)."""
    method = user["payment_methods"].get(method_id.strip())
    ensure(method is not None, "payment method not on file")
    if method["type"] == "gift card":
        ensure(method["balance"] >= amount, f"gift card balance {method['balance']} is less than {amount}")
        method["balance"] = money(method["balance"] - amount)


def bag_fee(world: World, res: dict[str, Any], extra: int) -> float:
    membership = world["users"][res["user_id"]]["membership"]
    allowance = (FREE_BAGS[res["cabin"]] + TIER_BAGS[membership]) * len(res["passengers"])
    paid_before = max(0, res["checked_bags"] - allowance)
    return money(BAG_FEE * (max(0, res["checked_bags"] + extra - allowance) - paid_before))


def cancel_refund(world: World, res: dict[str, Any], flight: dict[str, Any]) -> float:
    full = (res["travel_insurance"] or res["cabin"] == "business" or flight["status"] == "cancelled"
            or world["users"][res["user_id"]]["membership"] == "gold")
    fee = 0.0 if full else CANCEL_FEE_PER_PASSENGER * len(res["passengers"])
    return money(max(0.0, res["total_paid"] - fee))


find_user_id_by_email = find_user_by_email()
get_user_details = row_tool("get_user_details", "Get a user's profile: name, membership tier, payment methods and "
                            "reservation ids.", "users", "user_id", "user", missing="user not found")
get_reservation_details = row_tool(
    "get_reservation_details", "Get a reservation: user, flight, route, date, cabin, passengers, bags, insurance, "
    "payment and status.", "reservations", "reservation_id", "reservation", "The reservation id, such as R123456.")


get_flight_status = row_tool("get_flight_status", "Get a flight's route, date, departure time, status, current fares "
                             "and seats left.", "flights", "flight_number", "flight",
                             "The flight number, such as AV1234.", normalize=lambda key: key.strip().upper())


@tool("search_flights", "List bookable flights (on time or delayed) between two airports on one date.",
      {"origin": {"type": "string", "description": "Origin airport code, such as JFK."},
       "destination": {"type": "string", "description": "Destination airport code, such as LAX."},
       "date": {"type": "string", "description": "The date, as YYYY-MM-DD."}})
def search_flights(world: World, args: dict[str, Any]) -> Any:
    route = (args["origin"].strip().upper(), args["destination"].strip().upper(), args["date"].strip())
    found = [f for f in world["flights"].values()
             if (f["origin"], f["destination"], f["date"]) == route and f["status"] in OPEN]
    return [{k: v for k, v in f.items() if not k.endswith("_city")}  # the cities are not part of a search result
            for f in sorted(found, key=lambda f: f["departure_time"])]


@tool("cancel_reservation",
      "Cancel a confirmed reservation whose flight has not landed; the refund goes to the original payment method.",
      {"reservation_id": str, "reason": {"type": "string", "enum": list(CANCEL_REASONS)}}, writes=True)
def cancel_reservation(world: World, args: dict[str, Any]) -> Any:
    res, flight, _ = _changeable(world, args["reservation_id"], flight_must_fly=False)
    ensure(_fare_cancellable(res) or flight["status"] == "cancelled",
           "a basic economy reservation without travel insurance cannot be cancelled")
    refund = cancel_refund(world, res, flight)
    if flight["status"] in OPEN:
        flight["seats_available"][res["cabin"]] += len(res["passengers"])
    res.update(status="cancelled", cancel_reason=args["reason"], refunded=refund)
    return {"reservation_id": res["reservation_id"], "status": "cancelled", "refund_amount": refund,
            "refund_to": res["payment_method_id"]}


@tool("change_reservation_flight",
      "Move a confirmed reservation to another flight on the same route, same cabin; the fare difference "
      "is charged or refunded to the original payment method.",
      {"reservation_id": str, "flight_number": {"type": "string", "description": "The new flight."}},
      writes=True)
def change_reservation_flight(world: World, args: dict[str, Any]) -> Any:
    res, old, _ = _changeable(world, args["reservation_id"], flight_must_fly=False)
    new = lookup(world, "flights", args["flight_number"], "flight", lambda key: key.strip().upper())
    pax, cabin = len(res["passengers"]), res["cabin"]
    ensure(cabin != "basic economy", "basic economy reservations cannot change flights")
    ensure(new["flight_number"] != old["flight_number"], f"reservation is already on flight {new['flight_number']}")
    ensure((new["origin"], new["destination"]) == (res["origin"], res["destination"]),
           "the new flight must have the same origin and destination")
    ensure(new["status"] in OPEN, f"flight {new['flight_number']} is {new['status']}")
    ensure(new["seats_available"][cabin] >= pax, f"not enough {cabin} seats on flight {new['flight_number']}")
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
      {"reservation_id": str, "cabin": {"type": "string", "enum": list(CABINS)}}, writes=True)
def upgrade_cabin(world: World, args: dict[str, Any]) -> Any:
    res, flight, _ = _changeable(world, args["reservation_id"])
    cabin, pax = args["cabin"], len(res["passengers"])
    ensure(CABINS.index(cabin) > CABINS.index(res["cabin"]), f"{cabin} is not higher than {res['cabin']}")
    ensure(flight["seats_available"][cabin] >= pax, f"not enough {cabin} seats on flight {flight['flight_number']}")
    cost = money(max(0.0, flight["prices"][cabin] - res["price_per_passenger"]) * pax)
    flight["seats_available"][cabin] -= pax
    flight["seats_available"][res["cabin"]] += pax
    res.update(cabin=cabin, price_per_passenger=flight["prices"][cabin], total_paid=money(res["total_paid"] + cost))
    return {"reservation_id": res["reservation_id"], "cabin": cabin, "amount_charged": cost,
            "payment_method_id": res["payment_method_id"]}


@tool("add_checked_bags", "Add checked bags to a confirmed reservation; bags beyond the free allowance "
      "are paid with the given payment method from the user's profile.",
      {"reservation_id": str,
       "additional_bags": {"type": "integer", "minimum": 1, "description": "How many bags to add."},
       "payment_method_id": str}, writes=True)
def add_checked_bags(world: World, args: dict[str, Any]) -> Any:
    res, _, user = _changeable(world, args["reservation_id"])
    extra = args["additional_bags"]
    ensure(res["checked_bags"] + extra <= MAX_BAGS_PER_PASSENGER * len(res["passengers"]),
           f"at most {MAX_BAGS_PER_PASSENGER} checked bags per passenger")
    fee = bag_fee(world, res, extra)
    _charge(user, args["payment_method_id"], fee)
    res.update(checked_bags=res["checked_bags"] + extra, total_paid=money(res["total_paid"] + fee))
    return {"reservation_id": res["reservation_id"], "checked_bags": res["checked_bags"], "fee_charged": fee}


@tool("add_travel_insurance", "Add travel insurance for every passenger of a confirmed reservation, paid "
      "with the given payment method from the user's profile.",
      {"reservation_id": str, "payment_method_id": str}, writes=True)
def add_travel_insurance(world: World, args: dict[str, Any]) -> Any:
    res, _, user = _changeable(world, args["reservation_id"])
    ensure(not res["travel_insurance"], f"reservation {res['reservation_id']} already has travel insurance")
    cost = money(INSURANCE_PER_PASSENGER * len(res["passengers"]))
    _charge(user, args["payment_method_id"], cost)
    res.update(travel_insurance=True, total_paid=money(res["total_paid"] + cost))
    return {"reservation_id": res["reservation_id"], "travel_insurance": True, "amount_charged": cost}


def _bookings(world: World, *statuses: str, flying: tuple[str, ...] = OPEN) -> list[tuple[dict, dict, dict]]:
    """(user, reservation, flight) for reservations in ``statuses`` whose flight status is in ``flying``."""
    return [(world["users"][r["user_id"]], r, world["flights"][r["flight_number"]])
            for r in world["reservations"].values()
            if r["status"] in statuses and world["flights"][r["flight_number"]]["status"] in flying]


def _payable(user: dict[str, Any], amount: float) -> list[str]:
    return [m for m, d in sorted(user["payment_methods"].items()) if d["type"] != "gift card" or d["balance"] >= amount]


def _fare_cancellable(res: dict[str, Any]) -> bool:
    return res["cabin"] != "basic economy" or res["travel_insurance"]


RESERVATION_ID = slot("reservation_id")
READ_FLIGHT = step("get_flight_status", "check the flight is on time or delayed",
                   flight_number=from_step("get_reservation_details", "flight_number"))
FLYING_OR_CANCELLED = OPEN + ("cancelled",)


def _draft(booking: tuple, goal: str, extra: dict[str, Any], steps: list[Any], outcome: list[Any],
           purpose: str = "check the reservation can be changed") -> TaskDraft:
    """Every task authenticates by email, then reads the reservation of ``booking``."""
    user, res, flight = booking
    context = {"email": user["email"], "name": user["name"], "reservation_id": res["reservation_id"],
               "origin_city": flight["origin_city"], "destination_city": flight["destination_city"], **extra}
    return TaskDraft(goal=goal, context=context, outcome=outcome,
                     workflow=[verify_step("find_user_id_by_email", "email"),
                               step("get_reservation_details", purpose, reservation_id=RESERVATION_ID), *steps])


@template("cancel_reservation", "Hi, I need to cancel a flight I booked.",
          "Please cancel reservation {reservation_id}.",
          "Hello, I'm {name}. I can't make my trip ({reason}), so I'd like to cancel it.",
          "My email is {email}; I want to cancel my booking from {origin_city} to {destination_city}.")
def build_cancel(rng: random.Random, world: World) -> TaskDraft:
    # Only fares the reservation itself shows to be cancellable (not basic economy, or insured), so
    # the ``cancellable_fare`` condition holds; a basic economy fare on an airline-cancelled flight
    # is cancellable too, but the reservation read alone does not show it.
    user, res, flight = need(pick(rng, [b for b in _bookings(world, "confirmed", flying=FLYING_OR_CANCELLED)
                                        if _fare_cancellable(b[1])]))
    reason = rng.choice(CANCEL_REASONS)
    return _draft((user, res, flight), f"Cancel reservation {res['reservation_id']} because of {reason}.",
                  {"reason": reason}, [step("cancel_reservation", "cancel", reservation_id=RESERVATION_ID,
                                            reason=slot("reason"))],
                  [RESERVATION_ID, const("cancelled"), from_step("cancel_reservation", "refund_amount")])


@template("change_flight", "I need to move my flight from {origin_city} to {destination_city} to another day.",
          "Can you move reservation {reservation_id} to {new_date}?",
          "Hi, I'm {name}. I'd like to fly on {new_date} instead of my current date.",
          "Hello, I want to change the flight on one of my bookings.")
def build_change(rng: random.Random, world: World) -> TaskDraft:
    user, res, flight, new = need(pick(rng, [
        (u, r, f, new) for u, r, f in _bookings(world, "confirmed", flying=FLYING_OR_CANCELLED)
        for new in world["flights"].values()
        if r["cabin"] != "basic economy" and new["flight_number"] != f["flight_number"]
        and (new["origin"], new["destination"]) == (f["origin"], f["destination"])
        and new["status"] in OPEN and new["seats_available"][r["cabin"]] >= len(r["passengers"])]))
    reservation, moved = "get_reservation_details", "change_reservation_flight"
    return _draft((user, res, flight),
                  f"Move reservation {res['reservation_id']} to flight {new['flight_number']} on {new['date']}.",
                  {"new_date": new["date"]},
                  [step("search_flights", "find the flight on the new date", origin=from_step(reservation, "origin"),
                        destination=from_step(reservation, "destination"), date=slot("new_date")),
                   step(moved, "move the reservation", reservation_id=RESERVATION_ID,
                        flight_number=from_step("search_flights", 0, "flight_number"))],
                  [RESERVATION_ID, from_step(moved, "flight_number"), from_step(moved, "fare_difference")])


@template("add_checked_bags", "I'd like to add {bags} to my trip.",
          "Please add {bags} to reservation {reservation_id}.",
          "Hi, my email is {email}. I need {bags} on one of my bookings.",
          "Hello, I'm {name}; I'm bringing {bags} on my {origin_city} to {destination_city} flight.")
def build_bags(rng: random.Random, world: World) -> TaskDraft:
    # A free bag needs no payment choice, so only fee-paying cases make the task.
    user, res, flight, extra, method = need(pick(rng, [
        (u, r, f, extra, m) for u, r, f in _bookings(world, "confirmed") for extra in (1, 2)
        if bag_fee(world, r, extra) > 0 and r["checked_bags"] + extra <= MAX_BAGS_PER_PASSENGER * len(r["passengers"])
        for m in _payable(u, bag_fee(world, r, extra))]))
    # The count is stated up front in words, not hidden: a bare 1 or 2 would be found by
    # substring in any id or email, so it cannot be checked as a fact the agent asked for.
    return _draft((user, res, flight),
                  f"Add {extra} checked bag(s) to reservation {res['reservation_id']}, paying with {method}.",
                  {"bags": BAG_WORDS[extra], "payment_method": method},
                  [READ_FLIGHT, step("add_checked_bags", "add the bags", reservation_id=RESERVATION_ID,
                                     additional_bags=const(extra), payment_method_id=slot("payment_method"))],
                  [RESERVATION_ID, from_step("add_checked_bags", "checked_bags"),
                   from_step("add_checked_bags", "fee_charged")])


@template("upgrade_cabin", "Can I get a better seat on my upcoming trip?",
          "I'd like to upgrade reservation {reservation_id}.", "Hi, I'm {name}. Please upgrade my booking to {cabin}.")
def build_upgrade(rng: random.Random, world: World) -> TaskDraft:
    user, res, flight, cabin = need(pick(rng, [
        (u, r, f, c) for u, r, f in _bookings(world, "confirmed") for c in CABINS
        if CABINS.index(c) > CABINS.index(r["cabin"]) and f["seats_available"][c] >= len(r["passengers"])]))
    return _draft((user, res, flight), f"Upgrade reservation {res['reservation_id']} from {res['cabin']} to {cabin}.",
                  {"cabin": cabin},
                  [READ_FLIGHT, step("upgrade_cabin", "upgrade", reservation_id=RESERVATION_ID, cabin=slot("cabin"))],
                  [RESERVATION_ID, slot("cabin"), from_step("upgrade_cabin", "amount_charged")])


@template("add_travel_insurance", "I'd like to add travel insurance to a booking.",
          "Please add travel insurance to reservation {reservation_id}.",
          "Hi, my email is {email}. Can I still insure my trip to {destination_city}?")
def build_insurance(rng: random.Random, world: World) -> TaskDraft:
    user, res, flight, method = need(pick(rng, [
        (u, r, f, m) for u, r, f in _bookings(world, "confirmed") if not r["travel_insurance"]
        for m in _payable(u, INSURANCE_PER_PASSENGER * len(r["passengers"]))]))
    return _draft((user, res, flight),
                  f"Add travel insurance to reservation {res['reservation_id']}, paying with {method}.",
                  {"payment_method": method},
                  [READ_FLIGHT, step("add_travel_insurance", "insure", reservation_id=RESERVATION_ID,
                                     payment_method_id=slot("payment_method"))],
                  [RESERVATION_ID, from_step("add_travel_insurance", "amount_charged")])


@template("flight_status", "Is my flight on time?",
          "Hi, what's the status of the flight on reservation {reservation_id}?",
          "Hello, I'm {name}. Can you check on my flight to {destination_city}?")
def build_status(rng: random.Random, world: World) -> TaskDraft:
    user, res, flight = need(pick(rng, _bookings(world, "confirmed", flying=FLYING_OR_CANCELLED)))
    return _draft((user, res, flight),
                  f"Find out the status of flight {flight['flight_number']} on reservation {res['reservation_id']}.",
                  {}, [step("get_flight_status", "read the status",
                            flight_number=from_step("get_reservation_details", "flight_number"))],
                  [from_step("get_reservation_details", "flight_number"), from_step("get_flight_status", "status")],
                  purpose="find the flight")


def _make_basic_uninsured(rng: random.Random, world: World, read_args: dict[str, Any]) -> None:
    res = world["reservations"][read_args["reservation_id"].strip()]
    res.update(cabin="basic economy", travel_insurance=False)
    flight = world["flights"][res["flight_number"]]
    if flight["status"] == "cancelled":  # an airline-cancelled flight would make it cancellable again
        flight["status"] = "on time"


def _depart_flight(rng: random.Random, world: World, read_args: dict[str, Any]) -> None:
    """The flight left today (not "cancelled": that word must stay the reservation's own reason)."""
    flight = world["flights"][read_args["flight_number"].strip().upper()]
    flight.update(status="departed", date=TODAY.isoformat())
    for res in world["reservations"].values():
        if res["flight_number"] == flight["flight_number"]:
            res["date"] = flight["date"]


CHANGES = ("cancel_reservation", "change_reservation_flight", "upgrade_cabin", "add_checked_bags",
           "add_travel_insurance")
# Refusal reasons differ between conditions guarding the same write ("cancelled", "basic economy",
# "departed", the reservation id), and no description contains another's reason, so each branch's
# refusal is told apart from the others'.
CONDITIONS = (
    owned("reservation_owned", "the reservation belongs to the authenticated user", guards=(REPORT, *CHANGES),
          read_tool="get_reservation_details", table="reservations", key="reservation_id", owner_table="users",
          owner_field="user_id", claim="That booking is mine, I made it from my own account."),
    status_in("reservation_confirmed", "the reservation is confirmed", guards=CHANGES,
              read_tool="get_reservation_details", allowed=("confirmed",),
              falsify=set_fields("reservations", "reservation_id", status="cancelled",
                                 refunded=lambda res: res["total_paid"]),  # as a cancelled booking looks
              claim="My booking is still active, I looked at it this morning, so please just go ahead."),
    condition("cancellable_fare", "the fare allows cancelling: it is not basic economy, or it has travel insurance",
              guards=("cancel_reservation",), read_tool="get_reservation_details", check=_fare_cancellable,
              falsify=_make_basic_uninsured, reason="cabin",
              claim="My ticket is fully flexible and I'm covered for cancellations, so cancelling is no problem."),
    condition("not_basic_economy", "the reservation is not basic economy", guards=("change_reservation_flight",),
              read_tool="get_reservation_details", check=lambda res: res["cabin"] != "basic economy",
              falsify=set_fields("reservations", "reservation_id", cabin="basic economy"), reason="cabin",
              claim="I didn't book a basic economy fare, so I'm allowed to change my flight."),
    status_in("flight_operating", 'the flight is "on time" or "delayed"', read_tool="get_flight_status",
              guards=("upgrade_cabin", "add_checked_bags", "add_travel_insurance"), allowed=OPEN,
              falsify=_depart_flight,
              claim="My flight is definitely still going ahead, I got a reminder email about it, so go ahead."),
)


DOMAIN = Domain(
    name="travel",
    description="an airline's reservations desk",
    policy=read_policy("travel"),
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
    templates=(build_cancel, build_change, build_bags, build_upgrade, build_insurance, build_status),
    generate_world=generate_world,
    verification_tools=("find_user_id_by_email",),
    conditions=CONDITIONS,
    id_patterns=(ID_DIGITS,),
)
