"""Python implementations of insurance_claims.yaml's procedural tools.

Each hook takes ``(world, arguments)``, the world being ``{collection: {id: record}}``, and
returns JSON values; a failed precondition raises ``ToolError`` (the agent sees its message).
Arguments arrive validated against the tool's schema. A hook is a pure function of the
world and its arguments: new ids derive from existing ones, never from a clock or random.
"""

from __future__ import annotations

from typing import Any

from flywheel_assets.world.domains.base import ToolError

OPEN_CLAIM = ("submitted", "under_review")


def _row(world: dict, collection: str, key: str, label: str) -> dict[str, Any]:
    row = world.get(collection, {}).get(key)
    if row is None:
        raise ToolError(f"{label} {key} not found")
    return row


def verify_policyholder(world: dict, args: dict) -> dict[str, Any]:
    for holder_id, holder in sorted(world.get("policyholders", {}).items()):
        if holder["email"].lower() == args["email"].strip().lower() and holder["date_of_birth"] == args["date_of_birth"]:
            policies = sorted(p for p, row in world.get("policies", {}).items() if row["holder_id"] == holder_id)
            return {"policyholder_id": holder_id, "name": holder["name"], "policies": policies}
    raise ToolError("no policyholder matches that email address and date of birth")


def get_policy(world: dict, args: dict) -> dict[str, Any]:
    return {"policy_id": args["policy_id"], **_row(world, "policies", args["policy_id"], "policy")}


def get_claim(world: dict, args: dict) -> dict[str, Any]:
    return {"claim_id": args["claim_id"], **_row(world, "claims", args["claim_id"], "claim")}


def file_claim(world: dict, args: dict) -> dict[str, Any]:
    policy = _row(world, "policies", args["policy_id"], "policy")
    if policy["status"] != "active":
        raise ToolError(f"policy {args['policy_id']} is {policy['status']}, not active")
    if args["incident_date"] < policy["start_date"]:
        raise ToolError(f"the incident date is before the policy's start date {policy['start_date']}")
    amount = round(float(args["amount"]), 2)
    if amount > policy["coverage_limit"]:
        raise ToolError(f"the amount exceeds the coverage limit of {policy['coverage_limit']}")
    claims = world.setdefault("claims", {})
    number = max([int(c[2:]) for c in claims if c[2:].isdigit()] or [3000]) + 1
    claim_id = f"CL{number}"
    claims[claim_id] = {"policy_id": args["policy_id"], "status": "submitted", "incident_date": args["incident_date"],
                        "amount": amount, "description": args["description"], "documents": []}
    return {"claim_id": claim_id, **claims[claim_id]}


def withdraw_claim(world: dict, args: dict) -> dict[str, Any]:
    claim = _row(world, "claims", args["claim_id"], "claim")
    if claim["status"] not in OPEN_CLAIM:
        raise ToolError(f"claim {args['claim_id']} is {claim['status']} and cannot be withdrawn")
    claim["status"] = "withdrawn"
    claim["withdrawal_reason"] = args["reason"]
    return {"claim_id": args["claim_id"], **claim}
