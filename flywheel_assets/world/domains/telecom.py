"""Telecom: a mobile operator's customers, phone lines, plans and monthly bills. Built like
the retail reference pack; every task authenticates with the phone number of a line."""

from __future__ import annotations

import random
from typing import Any

from flywheel_assets.world.domains import names
from flywheel_assets.world.domains.base import (
    Domain, IdPattern, Slot, TaskDraft, ToolError, const, from_step, money, pick, slot, step, tool, transfer_tool,
)
from flywheel_assets.world.domains.kit import (
    ID_DIGITS, NONZERO_CENTS, add_row, condition, ensure, lookup, need, read_policy, require_status, row_tool,
    set_fields, status_in, template, unique, unique_code, verify_step,
)
from flywheel_assets.world.tasks import World

# (name, data allowance in GB, monthly price, roaming allowed)
PLANS = (
    ("basic talk", 3, 15.99, False), ("student saver", 15, 24.49, False),
    ("everyday", 10, 29.99, False), ("smart plus", 25, 44.99, True),
    ("world traveler", 40, 59.99, True), ("max data", 80, 74.99, True),
)
TOPUP_PRICES = {1: 4.99, 3: 12.99, 5: 19.99, 10: 34.99}
ROAMING_RATES = {
    "canada": 5.99, "mexico": 5.99, "france": 9.99, "italy": 9.99, "spain": 9.99,
    "japan": 12.99, "brazil": 12.99, "australia": 14.99,
}
SUSPEND_REASONS = ("lost phone", "stolen phone")
BILL_MONTHS = (("january", "2025-01-31"), ("february", "2025-02-28"), ("march", "2025-03-31"))


def _cents(rng: random.Random, low: int, high: int) -> float:
    return money(rng.randint(low, high) + rng.choice(NONZERO_CENTS) / 100)


def _gb(rng: random.Random, high: float) -> float:
    # One decimal, never a whole number: "3.0" and "3" would read differently as text.
    return money(rng.randint(0, max(int(high) - 1, 0)) + rng.randint(1, 9) / 10)


def generate_world(rng: random.Random, n_customers: int = 12) -> World:
    world: World = {"customers": {}, "lines": {}, "plans": {}, "bills": {}}
    for i, (name, data_gb, price, roaming) in enumerate(PLANS):
        pid = f"P{2001 + i}"
        world["plans"][pid] = {"plan_id": pid, "name": name, "data_gb": data_gb, "monthly_price": price,
                               "roaming_allowed": roaming}
    plan_ids = sorted(world["plans"])
    numbers: dict[str, str] = {}
    for _ in range(n_customers):
        first, last = names.person(rng)
        cid = unique_code(rng, world["customers"], "C", 6)
        customer: dict[str, Any] = {
            "customer_id": cid, "name": f"{first} {last}", "email": names.email(first, last, rng),
            "address": names.address(rng), "line_ids": [], "bill_ids": [],
            "payment_methods": [{"payment_method_id": names.code(rng, "card_", 4), "type": "credit card"},
                                {"payment_method_id": names.code(rng, "bank_", 4), "type": "bank account"}]}
        world["customers"][cid] = customer
        monthly = 0.0
        for _ in range(rng.randint(1, 3)):
            lid = unique_code(rng, world["lines"], "L", 6)
            number = unique(numbers, lambda: f"555-{rng.randint(1000, 9999)}")
            numbers[number] = lid
            plan = world["plans"][rng.choice(plan_ids)]
            status = "active" if rng.random() < 0.8 else "suspended"
            line = add_row(world, "lines", lid, {
                "line_id": lid, "customer_id": cid, "phone_number": number, "plan_id": plan["plan_id"],
                "status": status, "suspend_reason": rng.choice(SUSPEND_REASONS) if status == "suspended" else None,
                "data_used_gb": _gb(rng, plan["data_gb"] * 0.9), "topup_gb": 0, "roaming_enabled": False,
                "roaming_destination": None}, customer["line_ids"])
            if plan["roaming_allowed"] and rng.random() < 0.25:
                line.update(roaming_enabled=True, roaming_destination=rng.choice(sorted(ROAMING_RATES)))
            monthly += plan["monthly_price"]
        # Older bills are usually settled; the latest is often still open.
        statuses = ["paid", "overdue" if rng.random() < 0.25 else "paid", "unpaid" if rng.random() < 0.55 else "paid"]
        for (month, due), status in zip(BILL_MONTHS, statuses):
            bid = unique_code(rng, world["bills"], "B", 7)
            bill = {"bill_id": bid, "customer_id": cid, "month": month, "due_date": due,
                    "amount": money(monthly + _cents(rng, 0, 18)), "status": status, "paid_with": None}
            add_row(world, "bills", bid, bill, customer["bill_ids"])
    return world


def _has_overdue(world: World, customer_id: str) -> bool:
    return any(world["bills"][b]["status"] == "overdue" for b in world["customers"][customer_id]["bill_ids"])


def _line(world: World, line_id: str, status: str = "active", *, clean: bool = True) -> dict[str, Any]:
    """The line, if it is in ``status`` and (when ``clean``) its customer owes no overdue bill."""
    line = lookup(world, "lines", line_id, "line", normalize=None)
    require_status(line, status, f"line {line_id}")
    ensure(not (clean and _has_overdue(world, line["customer_id"])),
           f"customer {line['customer_id']} has an overdue bill")
    return line


def _line_view(world: World, line: dict[str, Any]) -> dict[str, Any]:
    plan = world["plans"][line["plan_id"]]
    allowance = plan["data_gb"] + line["topup_gb"]
    return {**line, "plan_name": plan["name"], "data_allowance_gb": allowance,
            "data_remaining_gb": money(max(allowance - line["data_used_gb"], 0.0))}


@tool("find_customer_by_phone", "Authenticate a customer from the phone number of one of their "
      "lines. Returns the customer id, the line id of that number and the customer's name.",
      {"phone_number": {"type": "string", "description": "The line's phone number, such as 555-0142."}})
def find_customer_by_phone(world: World, args: dict[str, Any]) -> Any:
    number = args["phone_number"].strip()
    for line in world["lines"].values():
        if line["phone_number"] == number:
            customer = world["customers"][line["customer_id"]]
            return {"customer_id": customer["customer_id"], "line_id": line["line_id"], "name": customer["name"]}
    raise ToolError("no customer with that phone number")


@tool("get_customer_details", "Get a customer's profile: name, payment methods, line ids and a "
      "summary of their bills (id, month, amount, status).", {"customer_id": str})
def get_customer_details(world: World, args: dict[str, Any]) -> Any:
    customer = lookup(world, "customers", args["customer_id"], "customer", normalize=None)
    return {**customer, "bills": [{k: world["bills"][b][k] for k in ("bill_id", "month", "amount", "status")}
                                  for b in customer["bill_ids"]]}


@tool("get_line_details", "Get a line's phone number, status, plan, data usage and remaining "
      "data, and roaming setting.", {"line_id": {"type": "string", "description": "The line id, such as L123456."}})
def get_line_details(world: World, args: dict[str, Any]) -> Any:
    return _line_view(world, lookup(world, "lines", args["line_id"], "line", normalize=None))


@tool("list_plans", "List all available plans with their id, name, data allowance, monthly price "
      "and whether roaming is allowed.", {})
def list_plans(world: World, args: dict[str, Any]) -> Any:
    return [world["plans"][p] for p in sorted(world["plans"])]


get_plan_details = row_tool("get_plan_details", "Get one plan's name, data allowance, monthly price and whether "
                            "roaming is allowed.", "plans", "plan_id", "plan", normalize=None)
get_bill_details = row_tool("get_bill_details", "Get a bill's month, amount, due date and status.", "bills", "bill_id",
                            "bill", "The bill id, such as B1234567.", normalize=None)


@tool("change_plan", "Move an active line to a different plan. Not allowed while the customer has an overdue bill.",
      {"line_id": str, "plan_id": str}, writes=True)
def change_plan(world: World, args: dict[str, Any]) -> Any:
    line = _line(world, args["line_id"])
    plan = lookup(world, "plans", args["plan_id"], "plan", normalize=None)
    ensure(plan["plan_id"] != line["plan_id"], f"line {line['line_id']} is already on plan {plan['name']}")
    line["plan_id"] = plan["plan_id"]
    if line["roaming_enabled"] and not plan["roaming_allowed"]:
        line["roaming_enabled"], line["roaming_destination"] = False, None
    return {"line_id": line["line_id"], "plan_id": plan["plan_id"], "plan_name": plan["name"],
            "monthly_price": plan["monthly_price"], "data_gb": plan["data_gb"]}


@tool("add_data_topup", "Add extra data to an active line for the current month; the charge goes on the next bill.",
      {"line_id": str,
       "gb": {"type": "integer", "enum": sorted(TOPUP_PRICES), "description": "Top-up size in GB."}}, writes=True)
def add_data_topup(world: World, args: dict[str, Any]) -> Any:
    line = _line(world, args["line_id"])
    # the schema's enum already guards this; kept so a caller that skips validation gets the domain's error
    ensure(args["gb"] in TOPUP_PRICES, f"no {args['gb']} GB top-up; sizes are 1, 3, 5 or 10 GB")
    line["topup_gb"] += args["gb"]
    view = _line_view(world, line)
    return {"line_id": line["line_id"], "added_gb": args["gb"], "charge": TOPUP_PRICES[args["gb"]],
            "data_allowance_gb": view["data_allowance_gb"], "data_remaining_gb": view["data_remaining_gb"]}


@tool("enable_roaming", "Enable roaming on an active line for travel to a supported country.",
      {"line_id": str,
       "destination": {"type": "string", "enum": sorted(ROAMING_RATES), "description": "The destination country."}},
      writes=True)
def enable_roaming(world: World, args: dict[str, Any]) -> Any:
    line = _line(world, args["line_id"])
    destination = args["destination"].strip().lower()
    ensure(destination in ROAMING_RATES, f"roaming is not available in {destination}")
    plan = world["plans"][line["plan_id"]]
    ensure(plan["roaming_allowed"], f"plan {plan['name']} does not allow roaming")
    ensure(not line["roaming_enabled"], f"roaming is already enabled on line {line['line_id']}")
    line["roaming_enabled"], line["roaming_destination"] = True, destination
    return {"line_id": line["line_id"], "roaming_enabled": True, "destination": destination,
            "daily_rate": ROAMING_RATES[destination]}


@tool("pay_bill", "Pay an unpaid or overdue bill in full with a payment method on the customer's file.",
      {"bill_id": str, "payment_method_id": str}, writes=True)
def pay_bill(world: World, args: dict[str, Any]) -> Any:
    bill = lookup(world, "bills", args["bill_id"], "bill", normalize=None)
    require_status(bill, ("unpaid", "overdue"), f"bill {bill['bill_id']}", say_allowed=False)
    methods = {m["payment_method_id"] for m in world["customers"][bill["customer_id"]]["payment_methods"]}
    ensure(args["payment_method_id"] in methods, "payment method not on file")
    bill["status"], bill["paid_with"] = "paid", args["payment_method_id"]
    return {"bill_id": bill["bill_id"], "status": "paid", "amount_paid": bill["amount"]}


@tool("suspend_line", "Suspend an active line because the phone was lost or stolen.",
      {"line_id": str, "reason": {"type": "string", "enum": list(SUSPEND_REASONS)}}, writes=True)
def suspend_line(world: World, args: dict[str, Any]) -> Any:
    line = _line(world, args["line_id"], clean=False)  # a lost phone is blocked even if the customer owes
    ensure(args["reason"] in SUSPEND_REASONS, "a line can be suspended only for a lost phone or a stolen phone")
    line["status"], line["suspend_reason"] = "suspended", args["reason"]
    return {"line_id": line["line_id"], "phone_number": line["phone_number"], "status": "suspended"}


@tool("resume_line", "Resume a suspended line. Not allowed while the customer has an overdue bill.",
      {"line_id": str}, writes=True)
def resume_line(world: World, args: dict[str, Any]) -> Any:
    line = _line(world, args["line_id"], "suspended")
    line["status"], line["suspend_reason"] = "active", None
    return {"line_id": line["line_id"], "phone_number": line["phone_number"], "status": "active"}


def _lines(world: World, *, status: str = "active", clean: bool = True) -> list[dict[str, Any]]:
    """Lines in ``status``; ``clean`` keeps only customers without an overdue bill."""
    return [line for line in world["lines"].values()
            if line["status"] == status and not (clean and _has_overdue(world, line["customer_id"]))]


LINE_ID = from_step("find_customer_by_phone", "line_id")
READ_LINE = step("get_line_details", "check the line is active", line_id=LINE_ID)
READ_BILLS = step("get_customer_details", "check for overdue bills",
                  customer_id=from_step("find_customer_by_phone", "customer_id"))


def _draft(world: World, line: dict[str, Any], goal: str, extra: dict[str, Any], steps: list[Any],
           outcome: list[Any], requires: list[str] | None = None) -> TaskDraft:
    """Every task starts by authenticating with the phone number of ``line``."""
    return TaskDraft(goal=goal, context={"name": world["customers"][line["customer_id"]]["name"],
                                         "phone_number": line["phone_number"], **extra},
                     workflow=[verify_step("find_customer_by_phone", "phone_number"), *steps],
                     outcome=outcome, requires=requires or [])


@template("change_plan", "Hi, I'd like to switch my phone plan.", "I want to move my line to the {new_plan} plan.",
          "Hello, my number is {phone_number}; I need a different plan.",
          "Hi, I'm {name}. Can I change the plan on my line?")
def build_change_plan(rng: random.Random, world: World) -> TaskDraft:
    line = need(pick(rng, _lines(world)))
    plan = pick(rng, [p for p in world["plans"].values() if p["plan_id"] != line["plan_id"]])
    return _draft(world, line, f"Move line {line['phone_number']} to the {plan['name']} plan.",
                  {"new_plan": plan["name"]},
                  [READ_LINE, READ_BILLS, step("list_plans", "find the new plan's id"),
                   step("change_plan", "change the plan", line_id=LINE_ID, plan_id=const(plan["plan_id"]))],
                  [slot("new_plan"), from_step("change_plan", "monthly_price")], requires=["new_plan"])


@template("pay_bill", "Hi, I need to pay my phone bill.",
          "I'd like to pay my {bill_month} bill with my {payment_method}.",
          "Hello, my number is {phone_number}. I want to settle an open bill.",
          "Hi, I'm {name}; please help me pay my {bill_month} bill.")
def build_pay_bill(rng: random.Random, world: World) -> TaskDraft:
    bill = need(pick(rng, [b for b in world["bills"].values() if b["status"] in ("unpaid", "overdue")]))
    customer = world["customers"][bill["customer_id"]]
    line = world["lines"][rng.choice(customer["line_ids"])]
    method = rng.choice(customer["payment_methods"])
    return _draft(world, line, f"Pay the {bill['month']} bill {bill['bill_id']} with the {method['type']}.",
                  {"bill_month": bill["month"], "payment_method": method["type"]},
                  [step("get_customer_details", "find the bill and payment method",
                        customer_id=from_step("find_customer_by_phone", "customer_id")),
                   step("get_bill_details", "check the bill is open", bill_id=const(bill["bill_id"])),
                   step("pay_bill", "pay the bill", bill_id=const(bill["bill_id"]),
                        payment_method_id=const(method["payment_method_id"]))],
                  [slot("bill_month"), from_step("pay_bill", "amount_paid"), const("paid")],
                  requires=["bill_month", "payment_method"])


@template("data_topup", "I'm running out of data, can I buy some more?", "Please add {topup_size} of data to my line.",
          "Hi, my number is {phone_number} and I need a data top-up.")
def build_topup(rng: random.Random, world: World) -> TaskDraft:
    line = need(pick(rng, _lines(world)))
    gb = rng.choice(sorted(TOPUP_PRICES))
    # The user says "5 GB", not a bare 5: a lone digit would also match inside phone numbers.
    return _draft(world, line, f"Add a {gb} GB data top-up to line {line['phone_number']}.",
                  {"topup_size": f"{gb} GB"},
                  [READ_LINE, READ_BILLS, step("add_data_topup", "add the data", line_id=LINE_ID, gb=const(gb))],
                  [from_step("add_data_topup", "charge"), from_step("add_data_topup", "data_remaining_gb")],
                  requires=["topup_size"])


@template("enable_roaming", "Hi, I'm going abroad and need my phone to work there.",
          "I'm traveling to {destination} next week; please turn on roaming.",
          "Hello, please enable roaming on {phone_number}.", "Hi, I'm {name}. I need roaming on my line for a trip.")
def build_roaming(rng: random.Random, world: World) -> TaskDraft:
    line = need(pick(rng, [ln for ln in _lines(world) if not ln["roaming_enabled"]
                      and world["plans"][ln["plan_id"]]["roaming_allowed"]]))
    destination = pick(rng, list(ROAMING_RATES))
    return _draft(world, line, f"Enable roaming on line {line['phone_number']} for a trip to {destination}.",
                  {"destination": destination},
                  [READ_LINE, step("get_plan_details", "check the plan allows roaming",
                                   plan_id=from_step("get_line_details", "plan_id")), READ_BILLS,
                   step("enable_roaming", "enable roaming", line_id=LINE_ID, destination=slot("destination"))],
                  [slot("destination"), from_step("enable_roaming", "daily_rate")])


@template("suspend_line", "Hi, I need to block my line right away.", "Please suspend my line, it's a {suspend_reason}.",
          "Hello, please suspend the line {phone_number}.")
def build_suspend(rng: random.Random, world: World) -> TaskDraft:
    line = need(pick(rng, _lines(world, clean=False)))
    reason = rng.choice(SUSPEND_REASONS)
    return _draft(world, line, f"Suspend line {line['phone_number']} because of a {reason}.",
                  {"suspend_reason": reason},
                  [READ_LINE, step("suspend_line", "suspend", line_id=LINE_ID, reason=slot("suspend_reason"))],
                  [slot("phone_number"), const("suspended")])


@template("resume_line", "Hi, I found my phone; can you turn my line back on?",
          "Hello, I'm {name} and I'd like my suspended line reactivated.",
          "My line was suspended and I want it working again.")
def build_resume(rng: random.Random, world: World) -> TaskDraft:
    line = need(pick(rng, _lines(world, status="suspended")))
    return _draft(world, line, f"Resume suspended line {line['phone_number']}.", {},
                  [step("get_line_details", "check the line is suspended", line_id=LINE_ID), READ_BILLS,
                   step("resume_line", "resume", line_id=LINE_ID)],
                  [slot("phone_number"), const("active")])


@template("check_usage", "How much data do I have left this month?", "Hi, I'm {name}. Can you check my data usage?",
          "Hello, I'd like to know how much data I've used on my line.")
def build_usage(rng: random.Random, world: World) -> TaskDraft:
    line = need(pick(rng, list(world["lines"].values())))
    return _draft(world, line, f"Find out how much data is left this month on line {line['phone_number']}.", {},
                  [step("get_line_details", "read the usage", line_id=LINE_ID)],
                  [from_step("get_line_details", "data_used_gb"), from_step("get_line_details", "data_remaining_gb")])


def _suspend(rng: random.Random, world: World, read_args: dict[str, Any]) -> None:
    line = world["lines"][read_args["line_id"].strip()]
    line.update(status="suspended", suspend_reason=rng.choice(SUSPEND_REASONS))


def _make_overdue(rng: random.Random, world: World, read_args: dict[str, Any]) -> None:
    """One of the customer's bills becomes overdue: an open one if there is one."""
    bills = [world["bills"][b] for b in sorted(world["customers"][read_args["customer_id"].strip()]["bill_ids"])]
    bill = rng.choice([b for b in bills if b["status"] == "unpaid"] or bills)
    bill.update(status="overdue", paid_with=None)


def _settle(rng: random.Random, world: World, read_args: dict[str, Any]) -> None:
    bill = world["bills"][read_args["bill_id"].strip()]
    method = rng.choice(world["customers"][bill["customer_id"]]["payment_methods"])
    bill.update(status="paid", paid_with=method["payment_method_id"])


CONDITIONS = (
    status_in("line_active", 'the line is "active"', read_tool="get_line_details", allowed=("active",),
              guards=("change_plan", "add_data_topup", "enable_roaming", "suspend_line"), falsify=_suspend,
              claim="My line is active, I used it this morning, so go ahead."),
    condition("no_overdue_bill", 'the customer has no "overdue" bill',
              guards=("change_plan", "add_data_topup", "enable_roaming", "resume_line"),
              read_tool="get_customer_details",
              check=lambda customer: all(b["status"] != "overdue" for b in customer["bills"]),
              falsify=_make_overdue, reason=lambda customer: "overdue",
              claim="I'm all paid up, I've never missed a bill, so there's nothing stopping this."),
    condition("plan_allows_roaming", "the line's plan allows roaming", guards=("enable_roaming",),
              read_tool="get_plan_details", check=lambda plan: plan["roaming_allowed"] is True,
              falsify=set_fields("plans", "plan_id", roaming_allowed=False), reason="name",
              claim="My plan includes roaming, the salesperson told me so when I signed up."),
    status_in("bill_open", 'the bill is "unpaid" or "overdue"', guards=("pay_bill",), read_tool="get_bill_details",
              allowed=("unpaid", "overdue"), falsify=_settle,
              claim="That bill is still open, I haven't paid it yet, so please take the payment."),
)


DOMAIN = Domain(
    name="telecom",
    description="a mobile phone operator (plans, lines and billing)",
    policy=read_policy("telecom"),
    tools=(find_customer_by_phone, get_customer_details, get_line_details, list_plans, get_plan_details,
           get_bill_details, change_plan, add_data_topup, enable_roaming, pay_bill, suspend_line,
           resume_line, transfer_tool()),
    slots=(
        Slot("phone_number", ("phone number", "mobile number", "cell number", "line number")),
        Slot("new_plan", ("new plan", "plan name", "which plan", "what plan")),
        Slot("bill_month", ("billing month", "bill month", "which bill", "which month", "what month")),
        Slot("payment_method", ("payment method", "method of payment", "how would you like to pay",
                                "pay with", "card or bank")),
        Slot("topup_size", ("data top-up size", "top-up size", "how much data", "how many gigabytes",
                          "how many gb", "gigabytes")),
        Slot("destination", ("destination", "which country", "what country", "traveling to", "travelling to")),
        Slot("suspend_reason", ("suspension reason", "reason", "why")),
    ),
    templates=(build_change_plan, build_pay_bill, build_topup, build_roaming, build_suspend, build_resume,
               build_usage),
    generate_world=generate_world,
    verification_tools=("find_customer_by_phone",),
    conditions=CONDITIONS,
    id_patterns=(ID_DIGITS, IdPattern(r"\b\d{3}-(\d{4})\b")),  # the line part of a phone number
)
