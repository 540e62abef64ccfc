"""Behaviour trees over a task's workflow: linear initialisation, policy-driven expansion,
path enumeration and rendering (text and Mermaid).

Node kinds: ``sequence`` (all children in order), ``selector`` (exactly one child applies:
the fallback chain of τ²-style policies), ``condition`` (a domain condition, or identity
verification, that holds or — with ``negate`` — fails), ``action`` (a workflow tool call
template), ``ask`` (hidden slots), ``inform`` and ``refuse``. Every branch of a
selector states its conditions explicitly, so a root-to-leaf path is self-describing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from flywheel_assets.world.domains import get_domain
from flywheel_assets.world.domains.base import REPORT
from flywheel_assets.world.tasks import TaskSpec, canonical_json, stable_id
from flywheel_assets.world.written import task_conditions

IDENTITY = "identity_verified"
"""The built-in condition every domain has: the verification call found the user."""

LEAF_KINDS = ("condition", "action", "ask", "inform", "refuse")


@dataclass
class Node:
    kind: str
    label: str = ""
    children: list["Node"] = field(default_factory=list)
    step: int | None = None  # workflow step index of an action
    tool: str | None = None
    slots: list[str] = field(default_factory=list)
    condition: str | None = None
    negate: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "children"}
        data["children"] = [c.to_dict() for c in self.children]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Node":
        return cls(**{**data, "children": [cls.from_dict(c) for c in data.get("children", [])]})


@dataclass
class BehaviorTree:
    tree_id: str
    task_id: str
    domain: str
    phase: str  # "linear" or "expanded"
    root: Node
    parent_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"tree_id": self.tree_id, "task_id": self.task_id, "domain": self.domain, "phase": self.phase,
                "root": self.root.to_dict(), "parent_ids": list(self.parent_ids), "stats": self.stats()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BehaviorTree":
        return cls(data["tree_id"], data["task_id"], data["domain"], data["phase"], Node.from_dict(data["root"]),
                   list(data.get("parent_ids", [])))

    def paths(self) -> list[list[Node]]:
        return enumerate_paths(self.root)

    def stats(self) -> dict[str, int]:
        return {"depth": depth(self.root), "branches": count_branches(self.root), "paths": len(self.paths()),
                "conditions": sum(1 for n in walk(self.root) if n.kind == "condition")}


def walk(node: Node):
    yield node
    for child in node.children:
        yield from walk(child)


def depth(node: Node) -> int:
    return 1 + max((depth(c) for c in node.children), default=0)


def count_branches(node: Node) -> int:
    """Alternatives beyond the first at every selector: 0 for a linear tree."""
    return sum(len(n.children) - 1 for n in walk(node) if n.kind == "selector")


def enumerate_paths(node: Node) -> list[list[Node]]:
    """Every root-to-leaf path as the sequence of leaves it runs through."""
    if node.kind in LEAF_KINDS:
        return [[node]]
    if node.kind == "selector":
        return [path for child in node.children for path in enumerate_paths(child)]
    combos = itertools.product(*(enumerate_paths(c) for c in node.children))
    return [[leaf for part in combo for leaf in part] for combo in combos]


def linear_tree(task: TaskSpec) -> BehaviorTree:
    """Phase 1: the seed workflow as one sequence."""
    children = [Node("ask", "ask for the facts the task needs", slots=list(task.required_slots))]
    children += [Node("action", s.purpose or s.tool, step=i, tool=s.tool) for i, s in enumerate(task.workflow)]
    children.append(Node("inform", "tell the user the outcome"))
    return BehaviorTree(stable_id("tree", task.task_id, "linear"), task.task_id, task.domain, "linear",
                        Node("sequence", task.goal, children))


def _guarded_branches(conditions: list[tuple[str, str]], success: list[Node]) -> Node:
    """``selector``: all conditions hold → success; else the first failing one decides (a refusal)."""
    holds = [Node("condition", desc, condition=name) for name, desc in conditions]
    branches = [Node("sequence", "allowed", holds + success)]
    for k, (name, desc) in enumerate(conditions):
        fail = Node("condition", f"not: {desc}", condition=name, negate=True)
        end = Node("refuse", f"refuse: not {desc}")
        branches.append(Node("sequence", f"not {desc}", holds[:k] + [fail, end]))
    return Node("selector", "check the policy", branches)


def expand_tree(linear: BehaviorTree, task: TaskSpec) -> BehaviorTree:
    """Phase 2: branch on identity verification and on every policy condition that guards a
    write and can be checked with a read made earlier in the workflow."""
    domain = get_domain(task.domain)
    nodes = linear.root.children
    actions = [n for n in nodes if n.kind == "action"]
    ask, final = nodes[0], nodes[-1]
    tail: list[Node] = [final]
    reads = {a.tool for a in actions}
    conditions = task_conditions(domain, task)
    report_guards = [(c.name, c.description) for c in conditions if REPORT in c.guards and c.read_tool in reads]
    if report_guards and not any(a.tool in domain.write_tools for a in actions):
        tail = [_guarded_branches(report_guards, tail)]
    # Built inside-out: each guarded write wraps everything after it.
    for index in range(len(actions) - 1, -1, -1):
        action = actions[index]
        earlier_reads = {a.tool for a in actions[:index]}
        guards = [(c.name, c.description) for c in conditions
                  if action.tool in c.guards and c.read_tool in earlier_reads]
        tail = [action] + tail
        if guards:
            tail = [_guarded_branches(guards, tail)]
    verify = next((i for i, a in enumerate(actions) if a.tool in domain.verification_tools), None)
    if verify is not None:
        # Everything after the verification call depends on it having found the user.
        head, rest = tail[: verify + 1], tail[verify + 1:]
        tail = head + [_guarded_branches([(IDENTITY, "the user's identity is verified")], rest)]
    root = Node("sequence", task.goal, [ask] + tail)
    return BehaviorTree(stable_id("tree", task.task_id, "expanded", canonical_json(root.to_dict())), task.task_id,
                        task.domain, "expanded", root, parent_ids=[linear.tree_id])


def render_text(tree: BehaviorTree) -> str:
    lines: list[str] = []

    def visit(node: Node, indent: int) -> None:
        mark = {"sequence": "→", "selector": "?", "condition": "◇", "action": "▶", "ask": "❓",
                "inform": "✉", "refuse": "✖"}.get(node.kind, "·")
        extra = f" [{node.tool}]" if node.kind == "action" else f" {node.slots}" if node.slots else ""
        lines.append(f"{'  ' * indent}{mark} {node.kind}: {node.label}{extra}")
        for child in node.children:
            visit(child, indent + 1)

    visit(tree.root, 0)
    return "\n".join(lines)


def render_mermaid(tree: BehaviorTree) -> str:
    lines = ["flowchart TD"]
    counter = itertools.count()

    def visit(node: Node) -> str:
        node_id = f"n{next(counter)}"
        text = f"{node.kind}: {node.tool or node.label}".replace('"', "'")
        shape = {"selector": ("{", "}"), "condition": ("{{", "}}"), "sequence": ("([", "])")}.get(node.kind, ("[", "]"))
        lines.append(f'    {node_id}{shape[0]}"{text}"{shape[1]}')
        for child in node.children:
            lines.append(f"    {node_id} --> {visit(child)}")
        return node_id

    visit(tree.root)
    return "\n".join(lines)
