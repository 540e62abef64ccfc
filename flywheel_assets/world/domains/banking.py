"""Banking: a retail bank's customers, their accounts, cards and recent transactions. Customers
authenticate with email plus date of birth; writes cover cards (freeze, unfreeze, replace), transfers
between a customer's own accounts under a per-tier daily limit, charge disputes and fee waivers."""

from __future__ import annotations

import random
from typing import Any

from flywheel_assets.world.domains import names
from flywheel_assets.world.domains.base import (
    Domain, IdPattern, Slot, TaskDraft, TaskTemplate, Tool, ToolError, const, from_step, money, pick, slot, step, tool,
    transfer_tool,
)
from flywheel_assets.world.domains.kit import (
    ID_DIGITS, NONZERO_CENTS, add_row, condition, ensure, first_free, lookup, need, owned, read_policy,
    require_status, set_fields, status_in, template, unique, unique_code, verify_step,
)
from flywheel_assets.world.tasks import World

TIERS = ("standard", "gold", "platinum")
DAILY_LIMITS = {"standard": 2000.0, "gold": 5000.0, "platinum": 10000.0}
ACCOUNT_TYPES = ("checking", "savings", "money market")
MERCHANTS = ("corner grocery", "city gas station", "streamline video", "blue kettle cafe", "metro transit", "bookhaven",
             "fitlife gym", "quickmart", "skyway airlines", "harbor pharmacy", "pixel electronics",
             "green leaf market", "sunrise bakery", "northside hardware")
FEES = (("monthly maintenance fee", 12.0), ("overdraft fee", 35.0), ("atm withdrawal fee", 3.5),
        ("wire transfer fee", 25.0), ("foreign transaction fee", 7.25), ("paper statement fee", 2.0))
MIN_TRANSFER = 50.0  # the smallest amount a transfer task moves (two 25-dollar units)
DISPUTE_REASONS = ("unauthorized", "duplicate charge", "item not received")
REPLACE_REASONS = ("lost", "stolen", "damaged")


def _add_transactions(rng: random.Random, world: World, account: dict[str, Any], card: str | None) -> None:
    # Sampling merchants and fees without replacement keeps each one unique per account,
    # so a user who names "the bookhaven charge" or "the overdraft fee" is unambiguous.
    merchants = rng.sample(MERCHANTS, rng.randint(2, 5))
    fees = rng.sample(FEES, rng.randint(0, 2))
    rows = [{"type": "purchase", "description": merchant, "card_last4": card,
             "status": rng.choices(("posted", "pending", "disputed"), weights=(7, 2, 1))[0],
             "amount": money(rng.uniform(4, 400))} for merchant in merchants]
    rows += [{"type": "fee", "description": description, "amount": amount, "status": "posted",
              "waived": rng.random() < 0.15} for description, amount in fees]
    if rng.random() < 0.6:
        rows.append({"type": "deposit", "description": "payroll deposit",
                     "amount": money(rng.uniform(800, 3500)), "status": "posted"})
    for row in rows:
        tid = unique_code(rng, world["transactions"], "T", 7)
        add_row(world, "transactions", tid, {"transaction_id": tid, "account_id": account["account_id"],
                                             "date": f"2024-06-{rng.randint(1, 28):02d}", **row},
                account["transactions"])


def generate_world(rng: random.Random, n_customers: int = 12) -> World:
    world: World = {"customers": {}, "accounts": {}, "cards": {}, "transactions": {}}
    emails: set[str] = set()
    for _ in range(n_customers):
        first, last = names.person(rng)
        email = names.email(first, last, rng)
        if email in emails:  # verify_identity looks customers up by email, so it must be unique
            continue
        emails.add(email)
        cid = unique_code(rng, world["customers"], "C", 6)
        tier = rng.choices(TIERS, weights=(6, 3, 1))[0]
        dob = f"{rng.randint(1950, 2003)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        customer: dict[str, Any] = {
            "customer_id": cid, "name": f"{first} {last}", "email": email, "date_of_birth": dob, "tier": tier,
            "address": names.address(rng), "fee_waivers_this_year": rng.choice((0, 0, 1)), "accounts": [], "cards": []}
        world["customers"][cid] = customer
        # Account types stay unique per customer so "my savings account" names one account.
        types = ["checking"] + [t for t in ACCOUNT_TYPES[1:] if rng.random() < (0.75 if t == "savings" else 0.25)]
        used_last4: set[str] = set()
        for kind in types:
            aid = unique_code(rng, world["accounts"], "A", 7)
            closed = kind != "checking" and rng.random() < 0.1
            account = {
                "account_id": aid, "customer_id": cid, "type": kind, "status": "closed" if closed else "open",
                "balance": 0.0 if closed else money(rng.uniform(20, 15000)), "daily_transfer_limit": DAILY_LIMITS[tier],
                "transferred_today": rng.choice((0.0, 0.0, money(rng.randint(1, 20) * 50))), "transactions": []}
            add_row(world, "accounts", aid, account, customer["accounts"])
            first_last4 = None
            for card_type in (["debit"] + (["credit"] if rng.random() < 0.4 else [])) if kind == "checking" else []:
                # Last four digits identify a card to the customer, so keep them unique per customer.
                last4 = unique(used_last4, lambda: str(rng.randint(1000, 9999)))
                used_last4.add(last4)
                kid = unique_code(rng, world["cards"], "K", 6)
                status = rng.choices(("active", "frozen", "replaced"), weights=(7, 2, 1))[0]
                add_row(world, "cards", kid, {"card_id": kid, "customer_id": cid, "account_id": aid, "type": card_type,
                                              "last4": last4, "status": status}, customer["cards"])
                first_last4 = first_last4 or last4
            if not closed:
                _add_transactions(rng, world, account, first_last4)
    return world


def _card(world: World, customer_id: str, last4: str) -> dict[str, Any]:
    for kid in lookup(world, "customers", customer_id, "customer", normalize=None)["cards"]:
        if world["cards"][kid]["last4"] == str(last4).strip():
            return world["cards"][kid]
    raise ToolError(f"no card ending in {last4} for customer {customer_id}")


def _transaction(world: World, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    account = lookup(world, "accounts", args["account_id"], "account")
    txn = world["transactions"].get(args["transaction_id"].strip(), {})
    ensure(txn.get("account_id") == account["account_id"],
           f"transaction {args['transaction_id']} not found on account {account['account_id']}")
    return account, txn


def _card_view(card: dict[str, Any]) -> dict[str, Any]:
    return {k: card[k] for k in ("last4", "type", "status", "account_id")}


ACCOUNT_ARG = {"account_id": {"type": "string", "description": "The account number, such as A1234567."}}
CARD_ARGS = {"customer_id": str, "card_last4": {"type": "string", "description": "The last four digits of the card."}}


@tool("verify_identity", "Authenticate a customer by email address and date of birth; returns the customer id.",
      {"email": {"type": "string", "description": "The customer's email address."},
       "date_of_birth": {"type": "string", "description": "Date of birth as YYYY-MM-DD."}})
def verify_identity(world: World, args: dict[str, Any]) -> Any:
    found = [c for c in world["customers"].values() if c["email"].lower() == args["email"].strip().lower()]
    ensure(bool(found) and found[0]["date_of_birth"] == args["date_of_birth"].strip(), "identity could not be verified")
    return found[0]["customer_id"]


@tool("get_customer_details", "Get a customer's profile: name, tier, accounts (id, type, status) and cards.",
      {"customer_id": str})
def get_customer_details(world: World, args: dict[str, Any]) -> Any:
    customer = lookup(world, "customers", args["customer_id"], "customer", normalize=None)
    return {**{k: customer[k] for k in ("customer_id", "name", "email", "tier", "fee_waivers_this_year")},
            "accounts": [{k: world["accounts"][a][k] for k in ("account_id", "type", "status")}
                         for a in customer["accounts"]],
            "cards": [_card_view(world["cards"][k]) for k in customer["cards"]]}


@tool("get_account_details", "Get an account's type, status, balance and daily transfer limit.", ACCOUNT_ARG)
def get_account_details(world: World, args: dict[str, Any]) -> Any:
    return {k: v for k, v in lookup(world, "accounts", args["account_id"], "account").items() if k != "transactions"}


@tool("list_transactions", "List an account's recent transactions, newest first.", ACCOUNT_ARG)
def list_transactions(world: World, args: dict[str, Any]) -> Any:
    rows = [world["transactions"][t] for t in lookup(world, "accounts", args["account_id"], "account")["transactions"]]
    return sorted(rows, key=lambda t: (t["date"], t["transaction_id"]), reverse=True)


@tool("get_card_details", "Get one of a customer's cards by its last four digits: type, status and account.", CARD_ARGS)
def get_card_details(world: World, args: dict[str, Any]) -> Any:
    return _card_view(_card(world, args["customer_id"], args["card_last4"]))


@tool("get_transaction_details", "Get one transaction of an account: type, description, amount, date and status.",
      {**ACCOUNT_ARG, "transaction_id": {"type": "string", "description": "The transaction id, such as T1234567."}})
def get_transaction_details(world: World, args: dict[str, Any]) -> Any:
    return _transaction(world, args)[1]


def _card_status_tool(name: str, description: str, before: str, after: str) -> Tool:
    """Freezing and unfreezing are the same write in opposite directions."""

    @tool(name, description, CARD_ARGS, writes=True)
    def set_status(world: World, args: dict[str, Any]) -> Any:
        card = _card(world, args["customer_id"], args["card_last4"])
        require_status(card, before, f"card ending in {card['last4']}")
        card["status"] = after
        return {"card_last4": card["last4"], "status": after}

    return set_status


freeze_card = _card_status_tool("freeze_card", "Temporarily freeze an active card.", "active", "frozen")
unfreeze_card = _card_status_tool("unfreeze_card", "Unfreeze a frozen card so it can be used again.", "frozen",
                                  "active")


@tool("replace_card", "Close a card and issue a replacement with new digits.",
      {**CARD_ARGS, "reason": {"type": "string", "enum": list(REPLACE_REASONS)}}, writes=True)
def replace_card(world: World, args: dict[str, Any]) -> Any:
    card = _card(world, args["customer_id"], args["card_last4"])
    ensure(card["status"] in ("active", "frozen"),
           f"card ending in {card['last4']} is {card['status']} and cannot be replaced")
    customer = world["customers"][card["customer_id"]]
    taken = {world["cards"][k]["last4"] for k in customer["cards"]}
    new_last4 = first_free(int(card["last4"]), lambda seed: (seed * 7919 + 4931) % 9000, lambda seed: str(seed + 1000),
                           taken)
    new_id = first_free(int(card["card_id"][1:]), lambda number: (number * 31 + 17) % 900000 + 100000,
                        lambda number: f"K{number}", world["cards"])
    card.update(status="replaced", replace_reason=args["reason"])
    new_card = {"card_id": new_id, "customer_id": card["customer_id"], "account_id": card["account_id"],
                "type": card["type"], "last4": new_last4, "status": "active"}
    add_row(world, "cards", new_id, new_card, customer["cards"])
    return {"old_card_last4": card["last4"], "old_card_status": "replaced", "new_card_last4": new_last4}


@tool("transfer_between_accounts", "Move money between two open accounts of the same customer.",
      {"customer_id": str, "from_account_id": str, "to_account_id": str,
       "amount": {"type": "number", "exclusiveMinimum": 0}}, writes=True)
def transfer_between_accounts(world: World, args: dict[str, Any]) -> Any:
    customer = lookup(world, "customers", args["customer_id"], "customer", normalize=None)
    source = lookup(world, "accounts", args["from_account_id"], "account")
    target = lookup(world, "accounts", args["to_account_id"], "account")
    amount = money(args["amount"])
    for account in (source, target):
        ensure(account["customer_id"] == customer["customer_id"],
               f"account {account['account_id']} does not belong to the customer")
        ensure(account["status"] == "open", f"account {account['account_id']} is {account['status']}")
    ensure(source["account_id"] != target["account_id"], "source and destination must be different accounts")
    ensure(amount > 0, "amount must be positive")
    ensure(amount <= source["balance"], f"insufficient funds: balance is {source['balance']}")
    remaining = money(source["daily_transfer_limit"] - source["transferred_today"])
    ensure(amount <= remaining, f"over the daily transfer limit: {remaining} left today")
    source["balance"] = money(source["balance"] - amount)
    target["balance"] = money(target["balance"] + amount)
    source["transferred_today"] = money(source["transferred_today"] + amount)
    return {"amount": amount, "from_account_id": source["account_id"], "from_balance": source["balance"],
            "to_account_id": target["account_id"], "to_balance": target["balance"]}


@tool("dispute_transaction", "Open a dispute on a posted purchase; returns the case id.",
      {"account_id": str, "transaction_id": str,
       "reason": {"type": "string", "enum": list(DISPUTE_REASONS)}}, writes=True)
def dispute_transaction(world: World, args: dict[str, Any]) -> Any:
    _, txn = _transaction(world, args)
    ensure(txn["type"] == "purchase", f"a {txn['type']} cannot be disputed")
    require_status(txn, "posted", "transaction")
    case_id = f"D{txn['transaction_id'][1:]}"
    txn.update(status="disputed", dispute_reason=args["reason"], dispute_case_id=case_id)
    return {"transaction_id": txn["transaction_id"], "status": "disputed", "case_id": case_id}


@tool("waive_fee", "Waive a fee and credit it back to the account.",
      {"account_id": str, "transaction_id": str}, writes=True)
def waive_fee(world: World, args: dict[str, Any]) -> Any:
    account, txn = _transaction(world, args)
    ensure(txn["type"] == "fee", "only fees can be waived")
    ensure(not txn["waived"], "this fee has already been waived")
    customer = world["customers"][account["customer_id"]]
    ensure(_waiver_eligible(customer), "standard customers may have only one fee waived per calendar year")
    txn["waived"] = True
    account["balance"] = money(account["balance"] + txn["amount"])
    customer["fee_waivers_this_year"] += 1
    return {"transaction_id": txn["transaction_id"], "status": "waived", "refunded_amount": txn["amount"],
            "new_balance": account["balance"]}


def _waiver_eligible(customer: dict[str, Any]) -> bool:
    return customer["tier"] in ("gold", "platinum") or customer["fee_waivers_this_year"] == 0


CUSTOMER_ID = from_step("verify_identity")
DETAILS = step("get_customer_details", "see the customer's cards and accounts", customer_id=CUSTOMER_ID)
READ_ACCOUNT = step("get_account_details", "check the account is the customer's", account_id=slot("account_id"))
READ_CARD = step("get_card_details", "check the card's status", customer_id=CUSTOMER_ID, card_last4=slot("card_last4"))


def _draft(customer: dict[str, Any], goal: str, extra: dict[str, Any], steps: list[Any], outcome: list[Any],
           requires: list[str] | None = None) -> TaskDraft:
    """Every task authenticates with the customer's email address and date of birth."""
    return TaskDraft(goal=goal, outcome=outcome, requires=requires or [],
                     context={"name": customer["name"], "email": customer["email"],
                              "date_of_birth": customer["date_of_birth"], **extra},
                     workflow=[verify_step("verify_identity", "email", "date_of_birth"), *steps])


def _card_task(status: tuple[str, ...], rng: random.Random, world: World) -> tuple[dict, dict]:
    card = world["cards"][need(pick(rng, [k for k, c in world["cards"].items() if c["status"] in status]))]
    return world["customers"][card["customer_id"]], card


def _card_status_task(tool_name: str, before: str, after: str, verb: str, *phrasings: str) -> TaskTemplate:
    """Freeze and unfreeze are the same task in opposite directions."""

    @template(tool_name, *phrasings)
    def build(rng: random.Random, world: World) -> TaskDraft:
        customer, card = _card_task((before,), rng, world)
        return _draft(customer, f"{verb} the card ending in {card['last4']}.", {"card_last4": card["last4"]},
                      [DETAILS, READ_CARD, step(tool_name, f"make the card {after}", customer_id=CUSTOMER_ID,
                                                card_last4=slot("card_last4"))],
                      [slot("card_last4"), const(after)])

    return build


freeze = _card_status_task("freeze_card", "active", "frozen", "Freeze",
                           "Hi, I think I misplaced my card. Can you freeze it for now?",
                           "Please freeze my card ending in {card_last4}.",
                           "Hello, I'm {name} and my email is {email}. I need to block one of my cards.")
unfreeze = _card_status_task("unfreeze_card", "frozen", "active", "Unfreeze",
                             "I found my card again, can you unfreeze it?",
                             "Please unfreeze the card ending in {card_last4}.",
                             "Hi, I'm {name}. I froze a card a while ago and want to use it again.")


@template("replace_card", "I need a replacement card.",
          "My card ending in {card_last4} was {replace_reason}; please send me a new one.",
          "Hi, I'm {name}. My card was {replace_reason} and I need it replaced.")
def build_replace(rng: random.Random, world: World) -> TaskDraft:
    customer, card = _card_task(("active", "frozen"), rng, world)
    reason = rng.choice(REPLACE_REASONS)
    return _draft(customer, f"Replace the {reason} card ending in {card['last4']}.",
                  {"card_last4": card["last4"], "replace_reason": reason},
                  [DETAILS, READ_CARD, step("replace_card", "close the old card and issue a new one",
                                            customer_id=CUSTOMER_ID, card_last4=slot("card_last4"),
                                            reason=slot("replace_reason"))],
                  [from_step("replace_card", "new_card_last4")])


@template("transfer_funds", "I'd like to move some money between my accounts.",
          "Please transfer {amount} dollars from account {from_account_id} to account {to_account_id}.",
          "Hi, I'm {name}. Can you move {amount} dollars into one of my other accounts?",
          "My email is {email}; I want to transfer money out of account {from_account_id}.")
def build_transfer(rng: random.Random, world: World) -> TaskDraft:
    pairs = []
    for customer in world["customers"].values():
        open_ids = [a for a in customer["accounts"] if world["accounts"][a]["status"] == "open"]
        for src in open_ids:
            s = world["accounts"][src]
            room = min(s["balance"], s["daily_transfer_limit"] - s["transferred_today"], 3000)
            pairs += [(src, dst, int(room // 25)) for dst in open_ids if dst != src and room >= MIN_TRANSFER]
    src, dst, units = need(pick(rng, pairs))
    amount = money(rng.randint(2, units) * 25)
    return _draft(world["customers"][world["accounts"][src]["customer_id"]],
                  f"Transfer {amount} from account {src} to account {dst}.",
                  {"from_account_id": src, "to_account_id": dst, "amount": amount},
                  [step("get_account_details", "check balance and daily limit", account_id=slot("from_account_id")),
                   step("transfer_between_accounts", "move the money", customer_id=CUSTOMER_ID,
                        from_account_id=slot("from_account_id"), to_account_id=slot("to_account_id"),
                        amount=slot("amount"))],
                  [slot("amount"), from_step("transfer_between_accounts", "from_balance")])


def _transaction_task(rng: random.Random, world: World, fits: Any) -> tuple[str, dict, dict, dict]:
    """A transaction that ``fits`` (its id and row), its account and the account's customer."""
    tid = need(pick(rng, [t for t, row in world["transactions"].items() if fits(row)]))
    txn = world["transactions"][tid]
    account = world["accounts"][txn["account_id"]]
    return tid, txn, account, world["customers"][account["customer_id"]]


@template("dispute_charge", "There's a charge on my account that I want to dispute.",
          "I want to dispute the {merchant} charge on account {account_id}.",
          "Hi, I'm {name}. I need to dispute a charge of {charge_amount} dollars from {merchant}.")
def build_dispute(rng: random.Random, world: World) -> TaskDraft:
    tid, txn, account, customer = _transaction_task(
        rng, world, lambda r: r["type"] == "purchase" and r["status"] == "posted")
    reason = rng.choice(DISPUTE_REASONS)
    return _draft(customer, f"Dispute the {txn['description']} charge of {txn['amount']} on account "
                            f"{account['account_id']} ({reason}).",
                  {"account_id": account["account_id"], "merchant": txn["description"],
                   "charge_amount": txn["amount"], "dispute_reason": reason},
                  [READ_ACCOUNT, step("list_transactions", "find the charge", account_id=slot("account_id")),
                   step("get_transaction_details", "check the charge is a posted purchase",
                        account_id=slot("account_id"), transaction_id=const(tid)),
                   step("dispute_transaction", "open the dispute", account_id=slot("account_id"),
                        transaction_id=const(tid), reason=slot("dispute_reason"))],
                  [from_step("dispute_transaction", "case_id")], requires=["merchant"])


@template("waive_fee", "Can you waive a fee that was charged to my account?",
          "I was charged a {fee_type} on account {account_id}; please refund it.",
          "Hi, I'm {name}, email {email}. I'd like a fee waived.")
def build_waive(rng: random.Random, world: World) -> TaskDraft:
    tid, txn, account, customer = _transaction_task(rng, world, lambda r: r["type"] == "fee" and not r["waived"] and (
        _waiver_eligible(world["customers"][world["accounts"][r["account_id"]]["customer_id"]])))
    return _draft(customer, f"Get the {txn['description']} of {txn['amount']} on account {account['account_id']} "
                            "waived.",
                  {"account_id": account["account_id"], "fee_type": txn["description"]},
                  [DETAILS, READ_ACCOUNT, step("list_transactions", "find the fee", account_id=slot("account_id")),
                   step("waive_fee", "waive it", account_id=slot("account_id"), transaction_id=const(tid))],
                  [from_step("waive_fee", "refunded_amount"), from_step("waive_fee", "new_balance")],
                  requires=["fee_type"])


@template("check_balance", "What's my balance?", "Hi, how much money is in my {account_type} account?",
          "Hello, I'm {name} ({email}). I'd like to check a balance.")
def build_balance(rng: random.Random, world: World) -> TaskDraft:
    account = world["accounts"][need(pick(rng, [a for a, row in world["accounts"].items() if row["status"] == "open"]))]
    return _draft(world["customers"][account["customer_id"]], f"Find out the balance of the {account['type']} account.",
                  {"account_type": account["type"]},
                  [DETAILS, step("get_account_details", "read the balance", account_id=const(account["account_id"]))],
                  [from_step("get_account_details", "balance")], requires=["account_type"])


def _drain(rng: random.Random, world: World, read_args: dict[str, Any]) -> None:
    """A balance below the smallest transfer a task asks for, so no requested amount fits."""
    cents = rng.choice(NONZERO_CENTS)
    balance = money(rng.randint(1, int(MIN_TRANSFER) - 2) + cents / 100)
    world["accounts"][read_args["account_id"].strip()]["balance"] = balance


CONDITIONS = (
    owned("account_owned", "the account belongs to the authenticated customer",
          guards=("transfer_between_accounts", "dispute_transaction", "waive_fee"), read_tool="get_account_details",
          table="accounts", key="account_id", owner_table="customers", owner_field="customer_id",
          claim="That account is mine, I opened it myself years ago."),
    status_in("card_not_replaced", 'the card is "active" or "frozen", not replaced',
              guards=("freeze_card", "unfreeze_card", "replace_card"), read_tool="get_card_details",
              allowed=("active", "frozen"), falsify=lambda rng, world, read_args: _card(
                  world, read_args["customer_id"], read_args["card_last4"]).update(status="replaced"),
              claim="That card is still open, it has never been replaced or closed, so please go ahead."),
    condition("sufficient_funds", "the source account's balance covers the transfer amount",
              guards=("transfer_between_accounts",), read_tool="get_account_details",
              # Transfer tasks never move less than MIN_TRANSFER, so a lower balance covers none.
              check=lambda account: account["balance"] >= MIN_TRANSFER, falsify=_drain, reason="balance",
              claim="There's plenty of money in that account, I just got paid, so the transfer will go through."),
    condition("charge_disputable", 'the transaction is a "posted" purchase',
              guards=("dispute_transaction",), read_tool="get_transaction_details",
              check=lambda txn: txn["type"] == "purchase" and txn["status"] == "posted",
              falsify=set_fields("transactions", "transaction_id", status="pending"), reason="status",
              claim="That charge has already gone through on my statement, so you can open the dispute now."),
    condition("fee_waiver_eligible", "the customer is gold or platinum, or has had no fee waived this year",
              guards=("waive_fee",), read_tool="get_customer_details", check=_waiver_eligible,
              falsify=set_fields("customers", "customer_id", tier="standard", fee_waivers_this_year=1), reason="tier",
              claim="I'm a gold member, so the fee should be waived."),
)


DOMAIN = Domain(
    name="banking",
    description="a retail bank",
    policy=read_policy("banking"),
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
    templates=(freeze, unfreeze, build_replace, build_transfer, build_dispute, build_waive, build_balance),
    generate_world=generate_world,
    verification_tools=("verify_identity",),
    conditions=CONDITIONS,
    # Card digits stand alone in the user's text; a birth date is a personal fact like an id (no rule reads it).
    id_patterns=(ID_DIGITS, IdPattern(r'last4":\s*"(\d{4})"'),
                 IdPattern(r'date_of_birth":\s*"(\d{4}-\d{2}-\d{2})"', "date")),
)
