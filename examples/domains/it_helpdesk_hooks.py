"""Python implementations of it_helpdesk.yaml's procedural tools (see
insurance_claims_hooks.py for the contract: ``(world, arguments) -> JSON``, ``ToolError``
for a failed precondition, no clock and no randomness)."""

from __future__ import annotations

from typing import Any

from flywheel_assets.world.domains.base import ToolError


def find_employee(world: dict, args: dict) -> dict[str, Any]:
    for employee_id, employee in sorted(world.get("employees", {}).items()):
        if employee["email"].lower() == args["email"].strip().lower():
            return {"employee_id": employee_id, "name": employee["name"], "department": employee["department"],
                    "account_status": employee["account_status"]}
    raise ToolError(f"no employee has the email address {args['email']}")


def list_devices(world: dict, args: dict) -> list[dict[str, Any]]:
    if args["employee_id"] not in world.get("employees", {}):
        raise ToolError(f"employee {args['employee_id']} not found")
    return [{"device_id": d, **row} for d, row in sorted(world.get("devices", {}).items())
            if row["employee_id"] == args["employee_id"]]


def get_ticket(world: dict, args: dict) -> dict[str, Any]:
    ticket = world.get("tickets", {}).get(args["ticket_id"])
    if ticket is None:
        raise ToolError(f"ticket {args['ticket_id']} not found")
    return {"ticket_id": args["ticket_id"], **ticket}


def open_ticket(world: dict, args: dict) -> dict[str, Any]:
    if args["employee_id"] not in world.get("employees", {}):
        raise ToolError(f"employee {args['employee_id']} not found")
    tickets = world.setdefault("tickets", {})
    ticket_id = f"T{max([int(t[1:]) for t in tickets if t[1:].isdigit()] or [9000]) + 1}"
    tickets[ticket_id] = {"employee_id": args["employee_id"], "category": args["category"],
                          "summary": args["summary"], "priority": args["priority"], "status": "open"}
    return {"ticket_id": ticket_id, **tickets[ticket_id]}


def close_ticket(world: dict, args: dict) -> dict[str, Any]:
    ticket = world.get("tickets", {}).get(args["ticket_id"])
    if ticket is None:
        raise ToolError(f"ticket {args['ticket_id']} not found")
    if ticket["status"] not in ("open", "in_progress"):
        raise ToolError(f"ticket {args['ticket_id']} is already {ticket['status']}")
    ticket["status"] = "closed"
    ticket["resolution"] = args["resolution"]
    return {"ticket_id": args["ticket_id"], **ticket}
