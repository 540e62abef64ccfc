"""Retail: an online store's users, orders and products.

This pack is the reference the others follow: world generator, tools (reads and writes,
each an OpenAI JSON schema plus an implementation over the world), policy, slots and
task templates.
"""

from __future__ import annotations

import random
from typing import Any

from flywheel_assets.world.domains import names
from flywheel_assets.world.domains.base import (
    Domain, Slot, TaskDraft, const, from_step, money, pick, slot, step, tool, transfer_tool,
)
from flywheel_assets.world.domains.kit import (
    ID_DIGITS, add_row, ensure, find_user_by_email, lookup, need, owned, read_policy, require_status, row_tool,
    set_fields, status_in, template, verify_step,
)
from flywheel_assets.world.tasks import World

PRODUCTS = (
    ("desk lamp", 34.99), ("water bottle", 18.5), ("yoga mat", 29.0), ("backpack", 64.0),
    ("bluetooth speaker", 79.99), ("coffee grinder", 45.25), ("running shoes", 119.0),
    ("wool scarf", 27.75), ("phone case", 15.99), ("office chair", 189.0),
    ("electric kettle", 39.9), ("sunglasses", 54.0), ("notebook set", 12.4),
    ("hiking boots", 142.5), ("wireless mouse", 24.99), ("table fan", 49.0),
)
ORDER_STATUSES = ("pending", "processed", "delivered", "cancelled")
CANCEL_REASONS = ("no longer needed", "ordered by mistake")


def generate_world(rng: random.Random, n_users: int = 12) -> World:
    world: World = {"users": {}, "orders": {}, "products": {}}
    for i, (name, price) in enumerate(PRODUCTS):
        pid = f"P{1000 + i}"
        world["products"][pid] = {"product_id": pid, "name": name, "price": price, "stock": rng.randint(0, 40)}
    for _ in range(n_users):
        first, last = names.person(rng)
        uid = f"{first}_{last}_{rng.randint(1000, 9999)}"
        mail = names.email(first, last, rng)
        if uid in world["users"] or any(u["email"] == mail for u in world["users"].values()):
            continue  # ids and emails identify one user
        card = names.code(rng, "card_", 4)
        world["users"][uid] = {"user_id": uid, "name": f"{first} {last}", "email": mail, "address": names.address(rng),
                               "payment_methods": [card, names.code(rng, "gift_card_", 4)], "orders": []}
        for _ in range(rng.randint(1, 4)):
            oid = names.code(rng, "W", 7)
            picked = rng.sample(sorted(world["products"]), rng.randint(1, 3))
            items = [{"item_id": f"{oid}-{j}", "product_id": p, "name": world["products"][p]["name"],
                      "price": world["products"][p]["price"]} for j, p in enumerate(picked)]
            order = {"order_id": oid, "user_id": uid, "status": rng.choice(ORDER_STATUSES), "items": items,
                     "payment_method_id": card, "address": dict(world["users"][uid]["address"]), "refunded": 0.0}
            add_row(world, "orders", oid, order, world["users"][uid]["orders"])
    return world


def _order(world: World, order_id: str, status: str) -> dict[str, Any]:
    """The order, if it is in ``status``: every write's precondition."""
    order = lookup(world, "orders", order_id, "order", normalize=None)
    require_status(order, status, f"order {order['order_id']}")
    return order


find_user_id_by_email = find_user_by_email()
get_user_details = row_tool("get_user_details", "Get a user's profile: name, address, payment methods and order ids.",
                            "users", "user_id", "user", normalize=None,
                            missing="user not found")
get_order_details = row_tool("get_order_details", "Get an order's status, items, payment method and address.",
                             "orders", "order_id", "order", "The order id, such as W1234567.",
                             normalize=None)
get_product_details = row_tool("get_product_details", "Get a product's name, price and stock.", "products",
                               "product_id", "product", normalize=None, missing="product not found")


@tool("cancel_pending_order", "Cancel a pending order. The refund goes to the original payment method.",
      {"order_id": str, "reason": {"type": "string", "enum": list(CANCEL_REASONS)}}, writes=True)
def cancel_pending_order(world: World, args: dict[str, Any]) -> Any:
    order = _order(world, args["order_id"], "pending")
    order["status"] = "cancelled"
    order["cancel_reason"] = args["reason"]
    order["refunded"] = money(sum(i["price"] for i in order["items"]))
    return {"order_id": order["order_id"], "status": "cancelled", "refund_amount": order["refunded"]}


@tool("return_delivered_order_items",
      "Return items of a delivered order; the refund goes to the given payment method.",
      {"order_id": str, "item_ids": {"type": "array", "items": {"type": "string"}, "minItems": 1},
       "payment_method_id": str}, writes=True)
def return_delivered_order_items(world: World, args: dict[str, Any]) -> Any:
    order = _order(world, args["order_id"], "delivered")
    items = {i["item_id"]: i for i in order["items"]}
    unknown = [i for i in args["item_ids"] if i not in items]
    ensure(not unknown, f"items not in order: {', '.join(unknown)}")
    ensure(args["payment_method_id"] in world["users"][order["user_id"]]["payment_methods"],
           "payment method not on file")
    amount = money(sum(items[i]["price"] for i in sorted(set(args["item_ids"]))))
    order["status"] = "return requested"
    order["returned_items"] = sorted(set(args["item_ids"]))
    order["refunded"] = amount
    return {"order_id": order["order_id"], "status": "return requested", "refund_amount": amount}


@tool("modify_pending_order_address", "Change the shipping address of a pending order.",
      {"order_id": str, "street": str, "city": str, "zip": str}, writes=True)
def modify_pending_order_address(world: World, args: dict[str, Any]) -> Any:
    order = _order(world, args["order_id"], "pending")
    order["address"] = {**order["address"], "street": args["street"], "city": args["city"], "zip": args["zip"]}
    return {"order_id": order["order_id"], "address": order["address"]}


def _user_orders(world: World, status: str) -> list[tuple[dict, dict]]:
    return [(world["users"][o["user_id"]], o) for o in world["orders"].values() if o["status"] == status]


def _auth(user: dict[str, Any]) -> dict[str, Any]:
    return {"email": user["email"], "name": user["name"]}


AUTHENTICATE = verify_step("find_user_id_by_email", "email")
READ_ORDER = step("get_order_details", "check the order is pending", order_id=slot("order_id"))


@template("cancel_order", "Hi, I'd like to cancel one of my orders.", "I want to cancel order {order_id}.",
          "Please cancel my order, it's {reason}.", "Hello, I'm {name}. I need to cancel an order I placed.")
def cancel_order(rng: random.Random, world: World) -> TaskDraft:
    user, order = need(pick(rng, _user_orders(world, "pending")))
    reason = rng.choice(CANCEL_REASONS)
    return TaskDraft(
        goal=f"Cancel pending order {order['order_id']} because it is {reason}.",
        context={**_auth(user), "order_id": order["order_id"], "reason": reason},
        workflow=[AUTHENTICATE, READ_ORDER,
                  step("cancel_pending_order", "cancel", order_id=slot("order_id"), reason=slot("reason"))],
        outcome=[slot("order_id"), const("cancelled"), from_step("cancel_pending_order", "refund_amount")],
    )


@template("return_item", "I'd like to return the {item_name} I received.",
          "Hi, I want to send something back from a delivered order.",
          "Hello, my email is {email}; I want to return an item.")
def return_item(rng: random.Random, world: World) -> TaskDraft:
    user, order = need(pick(rng, _user_orders(world, "delivered")))
    item = rng.choice(order["items"])
    return TaskDraft(
        goal=f"Return the {item['name']} from delivered order {order['order_id']}.",
        context={**_auth(user), "order_id": order["order_id"], "item_name": item["name"]},
        workflow=[AUTHENTICATE,
                  step("get_order_details", "find the item and payment method", order_id=slot("order_id")),
                  step("return_delivered_order_items", "return the item", order_id=slot("order_id"),
                       item_ids=const([item["item_id"]]),
                       payment_method_id=from_step("get_order_details", "payment_method_id"))],
        outcome=[slot("order_id"), from_step("return_delivered_order_items", "refund_amount")],
        requires=["item_name"],
    )


@template("change_address", "I need to change the shipping address of an order.",
          "Can you ship order {order_id} to a different address?",
          "Hi, I'm {name} and I moved; please update where my order goes.")
def change_address(rng: random.Random, world: World) -> TaskDraft:
    user, order = need(pick(rng, _user_orders(world, "pending")))
    new = names.address(rng)
    return TaskDraft(
        goal=f"Ship pending order {order['order_id']} to {new['street']}, {new['city']} {new['zip']}.",
        context={**_auth(user), "order_id": order["order_id"], "street": new["street"],
                 "city": new["city"], "zip": new["zip"]},
        workflow=[AUTHENTICATE, READ_ORDER,
                  step("modify_pending_order_address", "change the address", order_id=slot("order_id"),
                       street=slot("street"), city=slot("city"), zip=slot("zip"))],
        outcome=[slot("order_id"), slot("street")],
    )


@template("order_status", "Where is my order?", "Hi, what's the status of my order {order_id}?",
          "Hello, I'm {name}, can you check on an order for me?")
def order_status(rng: random.Random, world: World) -> TaskDraft:
    user, order = need(pick(rng, [(world["users"][o["user_id"]], o) for o in world["orders"].values()]))
    return TaskDraft(
        goal=f"Find out the status of order {order['order_id']}.",
        context={**_auth(user), "order_id": order["order_id"]},
        workflow=[AUTHENTICATE, step("get_order_details", "read the status", order_id=slot("order_id"))],
        outcome=[slot("order_id"), from_step("get_order_details", "status")],
    )


CONDITIONS = (
    owned("order_owned", "the order belongs to the authenticated user",
          guards=("report", "cancel_pending_order", "modify_pending_order_address", "return_delivered_order_items"),
          read_tool="get_order_details", table="orders", key="order_id", owner_table="users",
          owner_field="user_id", claim="That order is mine, I placed it from my account."),
    status_in("order_pending", "the order is still pending",
              guards=("cancel_pending_order", "modify_pending_order_address"), read_tool="get_order_details",
              allowed=("pending",), falsify=set_fields("orders", "order_id", status="processed"),
              claim="I checked on the website and the order is definitely still pending, so just go ahead."),
    status_in("order_delivered", "the order has been delivered",
              guards=("return_delivered_order_items",), read_tool="get_order_details",
              allowed=("delivered",), falsify=set_fields("orders", "order_id", status="processed"),
              claim="The order was delivered last week, I have it right here, so please process the return."),
)


DOMAIN = Domain(
    name="retail",
    description="an online retail store",
    policy=read_policy("retail"),
    tools=(find_user_id_by_email, get_user_details, get_order_details, get_product_details,
           cancel_pending_order, return_delivered_order_items, modify_pending_order_address,
           transfer_tool()),
    slots=(
        Slot("email", ("email", "e-mail", "email address")),
        Slot("order_id", ("order id", "order number", "which order")),
        Slot("reason", ("reason", "why")),
        Slot("street", ("street", "new address", "address")),
        Slot("city", ("city", "new address", "address")),
        Slot("zip", ("zip", "zip code", "postal code", "new address", "address")),
        Slot("item_name", ("which item", "item", "product")),
    ),
    templates=(cancel_order, return_item, change_address, order_status),
    generate_world=generate_world,
    verification_tools=("find_user_id_by_email",),
    conditions=CONDITIONS,
    id_patterns=(ID_DIGITS,),
)
