"""Banking: a retail bank's customers, their accounts, cards and recent transactions.

Follows the retail pack's structure. Customers authenticate with email plus date of birth;
writes cover cards (freeze, unfreeze, replace), transfers between a customer's own
accounts under a per-tier daily limit, charge disputes and fee waivers.
"""

from __future__ import annotations

import random
from typing import Any

from flywheel_assets.world.domains import names
from flywheel_assets.world.domains.base import (
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

TIERS = ("standard", "gold", "platinum")
DAILY_LIMITS = {"standard": 2000.0, "gold": 5000.0, "platinum": 10000.0}
ACCOUNT_TYPES = ("checking", "savings", "money market")
MERCHANTS = (
    "corner grocery", "city gas station", "streamline video", "blue kettle cafe", "metro transit",
    "bookhaven", "fitlife gym", "quickmart", "skyway airlines", "harbor pharmacy",
    "pixel electronics", "green leaf market", "sunrise bakery", "northside hardware",
)
FEES = (
    ("monthly maintenance fee", 12.0), ("overdraft fee", 35.0), ("atm withdrawal fee", 3.5),
    ("wire transfer fee", 25.0), ("foreign transaction fee", 7.25), ("paper statement fee", 2.0),
)
MIN_TRANSFER = 50.0  # the smallest amount a transfer task moves (two 25-dollar units)
DISPUTE_REASONS = ("unauthorized", "duplicate charge", "item not received")
REPLACE_REASONS = ("lost", "stolen", "damaged")

POLICY = """\
- Before reading or changing anything about a customer, authenticate them: call
  verify_identity with their email address and date of birth. If it fails, do not proceed.
  Act only on accounts and cards that belong to the authenticated customer.
- A card can be frozen only while it is "active", and unfrozen only while it is "frozen".
  A card that has been replaced is closed for good and cannot be changed.
- A card can be replaced only if it is "active" or "frozen", and only for one of these
  reasons: "lost", "stolen" or "damaged". The old card is closed and a new card is issued;
  tell the customer the last four digits of the new card.
- Transfers are allowed only between two different open accounts of the same customer,
  never to another customer. The amount must be positive, no more than the source
  account's balance, and the total moved out of an account in one day must stay within its
  daily transfer limit (standard 2000, gold 5000, platinum 10000).
- Only a posted purchase can be disputed: not a pending one, not a fee or deposit, and not
  one already disputed. The reason must be "unauthorized", "duplicate charge" or "item not
  received". Give the customer the dispute case id.
- A fee can be waived only if it has not been waived already. Gold and platinum customers
  may have any fee waived; standard customers at most one fee waiver per calendar year. The
  waived amount is credited back to the same account.
- Never make up account numbers, transaction ids or amounts: read them with the tools.
  Never reveal a customer's date of birth.
- Transfer to a human agent only if the request cannot be handled within this policy.
- When the request is done, tell the customer the outcome."""


def _date(rng: random.Random) -> str:
    return f"2024-06-{rng.randint(1, 28):02d}"


def _new_id(rng: random.Random, prefix: str, digits: int, taken: dict[str, Any]) -> str:
    # Collisions are rare but would silently overwrite an entity, so redraw.
    while True:
        candidate = names.code(rng, prefix, digits)
        if candidate not in taken:
            return candidate


def _add_transactions(rng: random.Random, world: World, account: dict[str, Any], card: str | None) -> None:
    # Sampling merchants and fees without replacement keeps each one unique per account,
    # so a user who names "the bookhaven charge" or "the overdraft fee" is unambiguous.
    merchants = rng.sample(MERCHANTS, rng.randint(2, 5))
    fees = rng.sample(FEES, rng.randint(0, 2))
    rows: list[dict[str, Any]] = []
    for merchant in merchants:
        status = rng.choices(("posted", "pending", "disputed"), weights=(7, 2, 1))[0]
        rows.append({"type": "purchase", "description": merchant, "amount": money(rng.uniform(4, 400)),
                     "status": status, "card_last4": card})
    for description, amount in fees:
        rows.append({"type": "fee", "description": description, "amount": amount,
                     "status": "posted", "waived": rng.random() < 0.15})
    if rng.random() < 0.6:
        rows.append({"type": "deposit", "description": "payroll deposit",
                     "amount": money(rng.uniform(800, 3500)), "status": "posted"})
    for row in rows:
        tid = _new_id(rng, "T", 7, world["transactions"])
        world["transactions"][tid] = {"transaction_id": tid, "account_id": account["account_id"],
                                      "date": _date(rng), **row}
        account["transactions"].append(tid)


def generate_world(rng: random.Random, n_customers: int = 12) -> World:
    world: World = {"customers": {}, "accounts": {}, "cards": {}, "transactions": {}}
    emails: set[str] = set()
    for _ in range(n_customers):
        first, last = names.person(rng)
        email = names.email(first, last, rng)
        if email in emails:  # verify_identity looks customers up by email, so it must be unique
            continue
        emails.add(email)
        cid = _new_id(rng, "C", 6, world["customers"])
        tier = rng.choices(TIERS, weights=(6, 3, 1))[0]
        dob = f"{rng.randint(1950, 2003)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        customer: dict[str, Any] = {
            "customer_id": cid, "name": f"{first} {last}", "email": email, "date_of_birth": dob,
            "tier": tier, "address": names.address(rng), "fee_waivers_this_year": rng.choice((0, 0, 1)),
            "accounts": [], "cards": [],
        }
        world["customers"][cid] = customer
        # Account types stay unique per customer so "my savings account" names one account.
        types = ["checking"] + [t for t in ACCOUNT_TYPES[1:] if rng.random() < (0.75 if t == "savings" else 0.25)]
        used_last4: set[str] = set()
        for kind in types:
            aid = _new_id(rng, "A", 7, world["accounts"])
            closed = kind != "checking" and rng.random() < 0.1
            account = {
                "account_id": aid, "customer_id": cid, "type": kind, "status": "closed" if closed else "open",
                "balance": 0.0 if closed else money(rng.uniform(20, 15000)),
                "daily_transfer_limit": DAILY_LIMITS[tier],
                "transferred_today": rng.choice((0.0, 0.0, money(rng.randint(1, 20) * 50))), "transactions": [],
            }
            world["accounts"][aid] = account
            customer["accounts"].append(aid)
            first_last4 = None
            for card_type in (["debit"] + (["credit"] if rng.random() < 0.4 else [])) if kind == "checking" else []:
                # Last four digits identify a card to the customer, so keep them unique per customer.
                last4 = str(rng.randint(1000, 9999))
                while last4 in used_last4:
                    last4 = str(rng.randint(1000, 9999))
                used_last4.add(last4)
                kid = _new_id(rng, "K", 6, world["cards"])
                status = rng.choices(("active", "frozen", "replaced"), weights=(7, 2, 1))[0]
                world["cards"][kid] = {"card_id": kid, "customer_id": cid, "account_id": aid, "type": card_type,
                                       "last4": last4, "status": status}
                customer["cards"].append(kid)
                first_last4 = first_last4 or last4
            if not closed:
                _add_transactions(rng, world, account, first_last4)
    return world


def _customer(world: World, customer_id: str) -> dict[str, Any]:
    customer = world["customers"].get(customer_id)
    if customer is None:
        raise ToolError(f"customer {customer_id} not found")
    return customer


def _account(world: World, account_id: str) -> dict[str, Any]:
    account = world["accounts"].get(account_id.strip())
    if account is None:
        raise ToolError(f"account {account_id} not found")
    return account


def _card(world: World, customer_id: str, last4: str) -> dict[str, Any]:
    customer = _customer(world, customer_id)
    for kid in customer["cards"]:
        if world["cards"][kid]["last4"] == str(last4).strip():
            return world["cards"][kid]
    raise ToolError(f"no card ending in {last4} for customer {customer_id}")


def _transaction(world: World, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    account = _account(world, args["account_id"])
    txn = world["transactions"].get(args["transaction_id"].strip())
    if txn is None or txn["account_id"] != account["account_id"]:
        raise ToolError(f"transaction {args['transaction_id']} not found on account {account['account_id']}")
    return account, txn


def _card_view(card: dict[str, Any]) -> dict[str, Any]:
    return {k: card[k] for k in ("last4", "type", "status", "account_id")}


@tool("verify_identity", "Authenticate a customer by email address and date of birth; returns the customer id.",
      {"email": {"type": "string", "description": "The customer's email address."},
       "date_of_birth": {"type": "string", "description": "Date of birth as YYYY-MM-DD."}})
def verify_identity(world: World, args: dict[str, Any]) -> Any:
    for customer in world["customers"].values():
        if customer["email"].lower() == args["email"].strip().lower():
            if customer["date_of_birth"] != args["date_of_birth"].strip():
                raise ToolError("identity could not be verified")
            return customer["customer_id"]
    raise ToolError("identity could not be verified")


@tool("get_customer_details", "Get a customer's profile: name, tier, accounts (id, type, status) and cards.",
      {"customer_id": {"type": "string"}})
def get_customer_details(world: World, args: dict[str, Any]) -> Any:
    customer = _customer(world, args["customer_id"])
    return {
        "customer_id": customer["customer_id"], "name": customer["name"], "email": customer["email"],
        "tier": customer["tier"], "fee_waivers_this_year": customer["fee_waivers_this_year"],
        "accounts": [{k: world["accounts"][a][k] for k in ("account_id", "type", "status")}
                     for a in customer["accounts"]],
        "cards": [_card_view(world["cards"][k]) for k in customer["cards"]],
    }


@tool("get_account_details", "Get an account's type, status, balance and daily transfer limit.",
      {"account_id": {"type": "string", "description": "The account number, such as A1234567."}})
def get_account_details(world: World, args: dict[str, Any]) -> Any:
    account = _account(world, args["account_id"])
    return {k: v for k, v in account.items() if k != "transactions"}


@tool("list_transactions", "List an account's recent transactions, newest first.",
      {"account_id": {"type": "string", "description": "The account number, such as A1234567."}})
def list_transactions(world: World, args: dict[str, Any]) -> Any:
    account = _account(world, args["account_id"])
    rows = [world["transactions"][t] for t in account["transactions"]]
    return sorted(rows, key=lambda t: (t["date"], t["transaction_id"]), reverse=True)


@tool("get_card_details", "Get one of a customer's cards by its last four digits: type, status and account.",
      {"customer_id": {"type": "string"},
       "card_last4": {"type": "string", "description": "The last four digits of the card."}})
def get_card_details(world: World, args: dict[str, Any]) -> Any:
    return _card_view(_card(world, args["customer_id"], args["card_last4"]))


@tool("get_transaction_details", "Get one transaction of an account: type, description, amount, date and status.",
      {"account_id": {"type": "string", "description": "The account number, such as A1234567."},
       "transaction_id": {"type": "string", "description": "The transaction id, such as T1234567."}})
def get_transaction_details(world: World, args: dict[str, Any]) -> Any:
    return dict(_transaction(world, args)[1])


_CARD_ARGS = {"customer_id": {"type": "string"},
              "card_last4": {"type": "string", "description": "The last four digits of the card."}}


def _set_card_status(world: World, args: dict[str, Any], before: str, after: str) -> Any:
    card = _card(world, args["customer_id"], args["card_last4"])
    if card["status"] != before:
        raise ToolError(f"card ending in {card['last4']} is {card['status']}, not {before}")
    card["status"] = after
    return {"card_last4": card["last4"], "status": after}


@tool("freeze_card", "Temporarily freeze an active card.", _CARD_ARGS, writes=True)
def freeze_card(world: World, args: dict[str, Any]) -> Any:
    return _set_card_status(world, args, "active", "frozen")


@tool("unfreeze_card", "Unfreeze a frozen card so it can be used again.", _CARD_ARGS, writes=True)
def unfreeze_card(world: World, args: dict[str, Any]) -> Any:
    return _set_card_status(world, args, "frozen", "active")


@tool("replace_card", "Close a card and issue a replacement with new digits.",
      {**_CARD_ARGS, "reason": {"type": "string", "enum": list(REPLACE_REASONS)}}, writes=True)
def replace_card(world: World, args: dict[str, Any]) -> Any:
    card = _card(world, args["customer_id"], args["card_last4"])
    if card["status"] not in ("active", "frozen"):
        raise ToolError(f"card ending in {card['last4']} is {card['status']} and cannot be replaced")
    if args["reason"] not in REPLACE_REASONS:
        raise ToolError(f"reason must be one of {', '.join(REPLACE_REASONS)}")
    customer = world["customers"][card["customer_id"]]
    taken = {world["cards"][k]["last4"] for k in customer["cards"]}
    # Tools have no rng: derive the new digits and id from the old ones so replays agree.
    seed, new_last4 = int(card["last4"]), card["last4"]
    while new_last4 in taken:
        seed = (seed * 7919 + 4931) % 9000
        new_last4 = str(seed + 1000)
    number = int(card["card_id"][1:])
    while f"K{number}" in world["cards"]:
        number = (number * 31 + 17) % 900000 + 100000
    new_id = f"K{number}"
    card.update(status="replaced", replace_reason=args["reason"])
    world["cards"][new_id] = {"card_id": new_id, "customer_id": card["customer_id"],
                              "account_id": card["account_id"], "type": card["type"],
                              "last4": new_last4, "status": "active"}
    customer["cards"].append(new_id)
    return {"old_card_last4": card["last4"], "old_card_status": "replaced", "new_card_last4": new_last4}


@tool("transfer_between_accounts", "Move money between two open accounts of the same customer.",
      {"customer_id": {"type": "string"}, "from_account_id": {"type": "string"},
       "to_account_id": {"type": "string"}, "amount": {"type": "number", "exclusiveMinimum": 0}},
      writes=True)
def transfer_between_accounts(world: World, args: dict[str, Any]) -> Any:
    customer = _customer(world, args["customer_id"])
    source, target = _account(world, args["from_account_id"]), _account(world, args["to_account_id"])
    amount = money(args["amount"])
    for account in (source, target):
        if account["customer_id"] != customer["customer_id"]:
            raise ToolError(f"account {account['account_id']} does not belong to the customer")
        if account["status"] != "open":
            raise ToolError(f"account {account['account_id']} is {account['status']}")
    if source["account_id"] == target["account_id"]:
        raise ToolError("source and destination must be different accounts")
    if amount <= 0:
        raise ToolError("amount must be positive")
    if amount > source["balance"]:
        raise ToolError(f"insufficient funds: balance is {source['balance']}")
    remaining = money(source["daily_transfer_limit"] - source["transferred_today"])
    if amount > remaining:
        raise ToolError(f"over the daily transfer limit: {remaining} left today")
    source["balance"] = money(source["balance"] - amount)
    target["balance"] = money(target["balance"] + amount)
    source["transferred_today"] = money(source["transferred_today"] + amount)
    return {"amount": amount, "from_account_id": source["account_id"], "from_balance": source["balance"],
            "to_account_id": target["account_id"], "to_balance": target["balance"]}


@tool("dispute_transaction", "Open a dispute on a posted purchase; returns the case id.",
      {"account_id": {"type": "string"}, "transaction_id": {"type": "string"},
       "reason": {"type": "string", "enum": list(DISPUTE_REASONS)}}, writes=True)
def dispute_transaction(world: World, args: dict[str, Any]) -> Any:
    account, txn = _transaction(world, args)
    if txn["type"] != "purchase":
        raise ToolError(f"a {txn['type']} cannot be disputed")
    if txn["status"] != "posted":
        raise ToolError(f"transaction is {txn['status']}, not posted")
    if args["reason"] not in DISPUTE_REASONS:
        raise ToolError(f"reason must be one of {', '.join(DISPUTE_REASONS)}")
    case_id = f"D{txn['transaction_id'][1:]}"
    txn.update(status="disputed", dispute_reason=args["reason"], dispute_case_id=case_id)
    return {"transaction_id": txn["transaction_id"], "status": "disputed", "case_id": case_id}


@tool("waive_fee", "Waive a fee and credit it back to the account.",
      {"account_id": {"type": "string"}, "transaction_id": {"type": "string"}}, writes=True)
def waive_fee(world: World, args: dict[str, Any]) -> Any:
    account, txn = _transaction(world, args)
    if txn["type"] != "fee":
        raise ToolError("only fees can be waived")
    if txn["waived"]:
        raise ToolError("this fee has already been waived")
    customer = world["customers"][account["customer_id"]]
    if customer["tier"] == "standard" and customer["fee_waivers_this_year"] >= 1:
        raise ToolError("standard customers may have only one fee waived per calendar year")
    txn["waived"] = True
    account["balance"] = money(account["balance"] + txn["amount"])
    customer["fee_waivers_this_year"] += 1
    return {"transaction_id": txn["transaction_id"], "status": "waived", "refunded_amount": txn["amount"],
            "new_balance": account["balance"]}


def _auth(customer: dict[str, Any]) -> dict[str, Any]:
    return {"name": customer["name"], "email": customer["email"], "date_of_birth": customer["date_of_birth"]}


def _verify() -> WorkflowStep:
    return step("verify_identity", "authenticate", email=slot("email"), date_of_birth=slot("date_of_birth"))


def _details() -> WorkflowStep:
    return step("get_customer_details", "see the customer's cards and accounts", customer_id=from_step(0))


def _read_account() -> WorkflowStep:
    return step("get_account_details", "check the account is the customer's", account_id=slot("account_id"))


def _read_card() -> WorkflowStep:
    return step("get_card_details", "check the card's status", customer_id=from_step(0),
                card_last4=slot("card_last4"))


def _card_task(status: tuple[str, ...], rng: random.Random, world: World) -> tuple[dict, dict] | None:
    kid = pick(rng, [k for k, c in world["cards"].items() if c["status"] in status])
    if kid is None:
        return None
    card = world["cards"][kid]
    return world["customers"][card["customer_id"]], card


def _status_builder(before: str, tool_name: str, after: str, verb: str) -> Any:
    """Freeze and unfreeze are the same task in opposite directions."""

    def build(rng: random.Random, world: World) -> TaskDraft | None:
        found = _card_task((before,), rng, world)
        if found is None:
            return None
        customer, card = found
        return TaskDraft(
            goal=f"{verb} the card ending in {card['last4']}.",
            context={**_auth(customer), "card_last4": card["last4"]},
            workflow=[_verify(), _details(), _read_card(),
                      step(tool_name, f"make the card {after}", customer_id=from_step(0),
                           card_last4=slot("card_last4"))],
            outcome=[slot("card_last4"), const(after)],
        )

    return build


def build_replace(rng: random.Random, world: World) -> TaskDraft | None:
    found = _card_task(("active", "frozen"), rng, world)
    if found is None:
        return None
    customer, card = found
    reason = rng.choice(REPLACE_REASONS)
    return TaskDraft(
        goal=f"Replace the {reason} card ending in {card['last4']}.",
        context={**_auth(customer), "card_last4": card["last4"], "replace_reason": reason},
        workflow=[_verify(), _details(), _read_card(),
                  step("replace_card", "close the old card and issue a new one", customer_id=from_step(0),
                       card_last4=slot("card_last4"), reason=slot("replace_reason"))],
        outcome=[from_step(3, "new_card_last4")],
    )


def build_transfer(rng: random.Random, world: World) -> TaskDraft | None:
    pairs = []
    for customer in world["customers"].values():
        open_ids = [a for a in customer["accounts"] if world["accounts"][a]["status"] == "open"]
        for src in open_ids:
            s = world["accounts"][src]
            room = min(s["balance"], s["daily_transfer_limit"] - s["transferred_today"], 3000)
            pairs += [(src, dst, int(room // 25)) for dst in open_ids if dst != src and room >= MIN_TRANSFER]
    found = pick(rng, pairs)
    if found is None:
        return None
    src, dst, units = found
    customer = world["customers"][world["accounts"][src]["customer_id"]]
    amount = money(rng.randint(2, units) * 25)
    return TaskDraft(
        goal=f"Transfer {amount} from account {src} to account {dst}.",
        context={**_auth(customer), "from_account_id": src, "to_account_id": dst, "amount": amount},
        workflow=[_verify(),
                  step("get_account_details", "check balance and daily limit", account_id=slot("from_account_id")),
                  step("transfer_between_accounts", "move the money", customer_id=from_step(0),
                       from_account_id=slot("from_account_id"), to_account_id=slot("to_account_id"),
                       amount=slot("amount"))],
        outcome=[slot("amount"), from_step(2, "from_balance")],
    )


def _transactions(world: World, ok: Any) -> list[str]:
    return [t for t, row in world["transactions"].items() if ok(row)]


def build_dispute(rng: random.Random, world: World) -> TaskDraft | None:
    tid = pick(rng, _transactions(world, lambda r: r["type"] == "purchase" and r["status"] == "posted"))
    if tid is None:
        return None
    txn = world["transactions"][tid]
    account = world["accounts"][txn["account_id"]]
    reason = rng.choice(DISPUTE_REASONS)
    return TaskDraft(
        goal=f"Dispute the {txn['description']} charge of {txn['amount']} on account {account['account_id']} "
             f"({reason}).",
        context={**_auth(world["customers"][account["customer_id"]]), "account_id": account["account_id"],
                 "merchant": txn["description"], "charge_amount": txn["amount"], "dispute_reason": reason},
        workflow=[_verify(), _read_account(),
                  step("list_transactions", "find the charge", account_id=slot("account_id")),
                  step("get_transaction_details", "check the charge is a posted purchase",
                       account_id=slot("account_id"), transaction_id=const(tid)),
                  step("dispute_transaction", "open the dispute", account_id=slot("account_id"),
                       transaction_id=const(tid), reason=slot("dispute_reason"))],
        outcome=[from_step(4, "case_id")],
        requires=["merchant"],
    )


def _may_waive(world: World, row: dict[str, Any]) -> bool:
    customer = world["customers"][world["accounts"][row["account_id"]]["customer_id"]]
    eligible = customer["tier"] != "standard" or customer["fee_waivers_this_year"] == 0
    return row["type"] == "fee" and not row["waived"] and eligible


def build_waive(rng: random.Random, world: World) -> TaskDraft | None:
    tid = pick(rng, _transactions(world, lambda r: _may_waive(world, r)))
    if tid is None:
        return None
    txn = world["transactions"][tid]
    account = world["accounts"][txn["account_id"]]
    return TaskDraft(
        goal=f"Get the {txn['description']} of {txn['amount']} on account {account['account_id']} waived.",
        context={**_auth(world["customers"][account["customer_id"]]), "account_id": account["account_id"],
                 "fee_type": txn["description"]},
        workflow=[_verify(), _details(), _read_account(),
                  step("list_transactions", "find the fee", account_id=slot("account_id")),
                  step("waive_fee", "waive it", account_id=slot("account_id"), transaction_id=const(tid))],
        outcome=[from_step(4, "refunded_amount"), from_step(4, "new_balance")],
        requires=["fee_type"],
    )


def build_balance(rng: random.Random, world: World) -> TaskDraft | None:
    aid = pick(rng, [a for a, row in world["accounts"].items() if row["status"] == "open"])
    if aid is None:
        return None
    account = world["accounts"][aid]
    return TaskDraft(
        goal=f"Find out the balance of the {account['type']} account.",
        context={**_auth(world["customers"][account["customer_id"]]), "account_type": account["type"]},
        workflow=[_verify(), _details(),
                  step("get_account_details", "read the balance", account_id=const(aid))],
        outcome=[from_step(2, "balance")],
        requires=["account_type"],
    )


def _give_to_another_customer(rng: random.Random, world: World, read_args: dict[str, Any]) -> None:
    account = _account(world, read_args["account_id"])
    other = pick(rng, [c for c in world["customers"] if c != account["customer_id"]])
    world["customers"][account["customer_id"]]["accounts"].remove(account["account_id"])
    world["customers"][other]["accounts"].append(account["account_id"])
    account["customer_id"] = other


def _replace_card_record(rng: random.Random, world: World, read_args: dict[str, Any]) -> None:
    _card(world, read_args["customer_id"], read_args["card_last4"])["status"] = "replaced"


def _drain(rng: random.Random, world: World, read_args: dict[str, Any]) -> None:
    """A balance below the smallest transfer a task asks for, so no requested amount fits."""
    cents = rng.choice([c for c in range(1, 100) if c % 10])  # no trailing zero: "23.4" vs "23.40"
    _account(world, read_args["account_id"])["balance"] = money(rng.randint(1, int(MIN_TRANSFER) - 2) + cents / 100)


def _make_pending(rng: random.Random, world: World, read_args: dict[str, Any]) -> None:
    _transaction(world, read_args)[1]["status"] = "pending"


def _use_up_waiver(rng: random.Random, world: World, read_args: dict[str, Any]) -> None:
    _customer(world, read_args["customer_id"]).update(tier="standard", fee_waivers_this_year=1)


def _waiver_eligible(customer: dict[str, Any]) -> bool:
    return customer["tier"] in ("gold", "platinum") or customer["fee_waivers_this_year"] == 0


CONDITIONS = (
    Condition("account_owned", "the account belongs to the authenticated customer",
              guards=("transfer_between_accounts", "dispute_transaction", "waive_fee"),
              read_tool="get_account_details", check=lambda account, customer_id: account["customer_id"] == customer_id,
              falsify=_give_to_another_customer, reason=lambda account: account["account_id"],
              claim="That account is mine, I opened it myself years ago.", needs_identity=True),
    Condition("card_not_replaced", 'the card is "active" or "frozen", not replaced',
              guards=("freeze_card", "unfreeze_card", "replace_card"), read_tool="get_card_details",
              check=lambda card: card["status"] in ("active", "frozen"), falsify=_replace_card_record,
              reason=lambda card: card["status"],
              claim="That card is still open, it has never been replaced or closed, so please go ahead."),
    Condition("sufficient_funds", "the source account's balance covers the transfer amount",
              guards=("transfer_between_accounts",), read_tool="get_account_details",
              # Transfer tasks never move less than MIN_TRANSFER, so a lower balance covers none.
              check=lambda account: account["balance"] >= MIN_TRANSFER, falsify=_drain,
              reason=lambda account: account["balance"],
              claim="There's plenty of money in that account, I just got paid, so the transfer will go through."),
    Condition("charge_disputable", 'the transaction is a "posted" purchase',
              guards=("dispute_transaction",), read_tool="get_transaction_details",
              check=lambda txn: txn["type"] == "purchase" and txn["status"] == "posted", falsify=_make_pending,
              reason=lambda txn: txn["status"],
              claim="That charge has already gone through on my statement, so you can open the dispute now."),
    Condition("fee_waiver_eligible", "the customer is gold or platinum, or has had no fee waived this year",
              guards=("waive_fee",), read_tool="get_customer_details",
              check=_waiver_eligible, falsify=_use_up_waiver,
              reason=lambda customer: customer["tier"],
              claim="I'm a gold member, so the fee should be waived."),
)


DOMAIN = Domain(
    name="banking",
    description="a retail bank",
    policy=POLICY,
    tools=(verify_identity, get_customer_details, get_account_details, list_transactions, get_card_details,
           get_transaction_details, freeze_card, unfreeze_card, replace_card, transfer_between_accounts,
           dispute_transaction, waive_fee, transfer_tool()),
    slots=(
        Slot("email", ("email address", "email", "e-mail")),
        Slot("date_of_birth", ("date of birth", "birth date", "birthday", "dob")),
        Slot("card_last4", ("card's last four digits", "last four digits", "last 4 digits", "card number",
                            "which card")),
        Slot("replace_reason", ("reason for the replacement", "reason", "what happened to the card")),
        Slot("from_account_id", ("source account", "account to transfer from", "transfer from", "from account")),
        Slot("to_account_id", ("destination account", "account to transfer to", "transfer to", "receiving account")),
        Slot("amount", ("transfer amount", "amount", "how much")),
        Slot("account_id", ("account number", "account id")),
        Slot("merchant", ("merchant", "which charge", "which transaction")),
        Slot("dispute_reason", ("reason for the dispute", "reason", "why")),
        Slot("fee_type", ("type of fee", "which fee", "fee type")),
        Slot("account_type", ("account type", "type of account", "which account")),
    ),
    templates=(
        TaskTemplate("freeze_card", _status_builder("active", "freeze_card", "frozen", "Freeze"), (
            "Hi, I think I misplaced my card. Can you freeze it for now?",
            "Please freeze my card ending in {card_last4}.",
            "Hello, I'm {name} and my email is {email}. I need to block one of my cards.",
        )),
        TaskTemplate("unfreeze_card", _status_builder("frozen", "unfreeze_card", "active", "Unfreeze"), (
            "I found my card again, can you unfreeze it?",
            "Please unfreeze the card ending in {card_last4}.",
            "Hi, I'm {name}. I froze a card a while ago and want to use it again.",
        )),
        TaskTemplate("replace_card", build_replace, (
            "I need a replacement card.",
            "My card ending in {card_last4} was {replace_reason}; please send me a new one.",
            "Hi, I'm {name}. My card was {replace_reason} and I need it replaced.",
        )),
        TaskTemplate("transfer_funds", build_transfer, (
            "I'd like to move some money between my accounts.",
            "Please transfer {amount} dollars from account {from_account_id} to account {to_account_id}.",
            "Hi, I'm {name}. Can you move {amount} dollars into one of my other accounts?",
            "My email is {email}; I want to transfer money out of account {from_account_id}.",
        )),
        TaskTemplate("dispute_charge", build_dispute, (
            "There's a charge on my account that I want to dispute.",
            "I want to dispute the {merchant} charge on account {account_id}.",
            "Hi, I'm {name}. I need to dispute a charge of {charge_amount} dollars from {merchant}.",
        )),
        TaskTemplate("waive_fee", build_waive, (
            "Can you waive a fee that was charged to my account?",
            "I was charged a {fee_type} on account {account_id}; please refund it.",
            "Hi, I'm {name}, email {email}. I'd like a fee waived.",
        )),
        TaskTemplate("check_balance", build_balance, (
            "What's my balance?",
            "Hi, how much money is in my {account_type} account?",
            "Hello, I'm {name} ({email}). I'd like to check a balance.",
        )),
    ),
    generate_world=generate_world,
    verification_tools=("verify_identity",),
    conditions=CONDITIONS,
)
