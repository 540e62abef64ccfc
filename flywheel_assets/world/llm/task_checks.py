"""The checks of a written task (``world_writer.py``): its shape, tools and argument
schemas, where each argument comes from, its records, its request, the replayed outputs
against what the model wrote, its outcome and its conditions. Each raises ``Rejected`` (or
returns a reason) naming the place in the answer: ``workflow[2].arguments.amount: ...``."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import jsonschema

from flywheel_assets.world.domain_files import DomainFile, Workflow, collection_names
from flywheel_assets.world.domains.base import Domain
from flywheel_assets.world.tasks import ArgSource, World, copy_world
from flywheel_assets.world.written import condition_problem, field_path, read_field

MAX_STEPS = 12
FACT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
DEFAULT_OUTCOME_FIELDS = 3


class Rejected(ValueError):
    """A written task that cannot be kept; the message names the place and the problem."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def same_value(a: Any, b: Any) -> bool:
    """JSON equality, numbers within 1e-6 (a model writes 1830.45 for 1830.4500000001)."""
    if _number(a) and _number(b):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def disagreement(written: Any, replayed: Any, at: str) -> str:
    """Where the written output is not what the replay returned ("" when it agrees): the
    keys of dicts the model wrote recursively, lists and scalars whole."""
    if isinstance(written, dict):
        if not isinstance(replayed, dict):
            return f"{at}: wrote an object, the replay returned {_short(replayed)}"
        for key, value in written.items():
            if key not in replayed:
                return f"{at}.{key}: wrote {_short(value)}, the replay returned no {key!r}"
            problem = disagreement(value, replayed[key], f"{at}.{key}")
            if problem:
                return problem
        return ""
    return "" if same_value(written, replayed) else \
        f"{at}: wrote {_short(written)}, the replay returned {_short(replayed)}"


def _at(path: Any) -> str:
    """A jsonschema error's path as ``.amount`` / ``[2]``, appended to the place it is in."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _short(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + "..."


def find_path(value: Any, output: Any) -> list[Any] | None:
    """The keys/indices at which ``output`` holds ``value`` exactly (depth first, keys in
    sorted order, so the same output always gives the same path), or None."""
    if same_value(value, output) and type(value) is type(output):
        return []
    children = sorted(output.items()) if isinstance(output, dict) else \
        enumerate(output) if isinstance(output, list) else ()
    for key, child in children:
        below = find_path(value, child)
        if below is not None:
            return [key, *below]
    return None


def stated_in(value: Any, text: str) -> bool:
    """Whether ``text`` writes ``value`` (every element of a list), case-insensitively."""
    lowered = text.lower()
    if isinstance(value, list):
        return bool(value) and all(stated_in(v, text) for v in value)
    if isinstance(value, bool):
        return str(value).lower() in lowered
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) in lowered
    return isinstance(value, (str, int, float)) and str(value).lower() in lowered


def arg_source(value: Any, step: int, facts: dict[str, Any], outputs: list[Any], goal: str) -> ArgSource:
    for name, fact in facts.items():
        if same_value(value, fact) and type(value) is type(fact):
            return ArgSource("slot", slot=name)
    for earlier in range(step - 1, -1, -1):  # the nearest output: the data dependency the workflow means
        path = find_path(value, outputs[earlier])
        if path is not None:
            return ArgSource("step", step=earlier, path=path)
    if stated_in(value, goal):
        return ArgSource("const", value=value)
    raise Rejected(f"comes from no fact, earlier output or the goal ({_short(value)})")


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise Rejected(reason)


KIND_NAMES = {str: "a string", dict: "an object", list: "a list"}


def check_shape(answer: Any) -> None:
    _require(isinstance(answer, dict), "the answer is not a JSON object")
    for key, kind in (("goal", str), ("request", str), ("facts", dict), ("records", dict), ("workflow", list)):
        _require(key in answer, f"{key}: missing")
        _require(isinstance(answer[key], kind), f"{key}: must be {KIND_NAMES[kind]}")
    for key, kind in (("fact_phrases", dict), ("outcome", list), ("conditions", list)):  # optional
        _require(answer.get(key) is None or isinstance(answer[key], kind), f"{key}: must be {KIND_NAMES[kind]}")
    _require(bool(answer["goal"].strip()) and bool(answer["request"].strip()), "goal and request must not be empty")
    _require(bool(answer["facts"]), "facts: the user must know at least one fact for the agent to ask")
    for name, value in answer["facts"].items():
        _require(bool(FACT_NAME.match(name)), f"facts.{name}: a fact name must match {FACT_NAME.pattern}")
        _require(value is not None and value != "", f"facts.{name}: must have a value")
    for name, phrase in (answer.get("fact_phrases") or {}).items():
        _require(name in answer["facts"], f"fact_phrases.{name}: not a fact")
        _require(isinstance(phrase, str) and bool(phrase.strip()), f"fact_phrases.{name}: must be a phrase")
    _require(1 <= len(answer["workflow"]) <= MAX_STEPS, f"workflow: must have 1 to {MAX_STEPS} steps")
    for index, wf_step in enumerate(answer["workflow"]):
        at = f"workflow[{index}]"
        _require(isinstance(wf_step, dict), f"{at}: must be an object")
        _require(isinstance(wf_step.get("tool"), str), f"{at}.tool: must be a tool name")
        _require(isinstance(wf_step.get("arguments"), dict), f"{at}.arguments: must be an object")
        _require("output" in wf_step, f"{at}.output: missing")
        _require(isinstance(wf_step.get("purpose", ""), str), f"{at}.purpose: must be a string")


def check_tools(domain_file: DomainFile, workflow: list[dict[str, Any]]) -> None:
    known = {t.name: t for t in domain_file.tools}
    for index, wf_step in enumerate(workflow):
        decl = known.get(wf_step["tool"])
        _require(decl is not None, f"workflow[{index}].tool: unknown tool {wf_step['tool']!r} "
                                   f"(tools: {', '.join(sorted(known))})")
        schema = decl.parameters  # type: ignore[union-attr]
        validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)(schema)
        problem = jsonschema.exceptions.best_match(validator.iter_errors(wf_step["arguments"]))
        if problem is not None:
            raise Rejected(f"workflow[{index}].arguments{_at(problem.absolute_path)}: {problem.message[:200]}")


def check_follows(workflow: Workflow, calls: list[dict[str, Any]]) -> None:
    """The task is labelled with the hinted workflow, so its calls must include that
    workflow's tools in order (other calls may come between)."""
    remaining = iter(c["tool"] for c in calls)
    wanted = [s.tool for s in workflow.steps]
    _require(all(tool in remaining for tool in wanted),
             f"workflow: does not follow the workflow {workflow.name} ({' -> '.join(wanted)})")


def written_world(domain_file: DomainFile, records: dict[str, Any]) -> World:
    """The seed records with the written ones added (a written id replaces a seed record)."""
    declared = collection_names(domain_file) if domain_file.entities else None
    world = domain_file.world()
    for collection, rows in records.items():
        at = f"records.{collection}"
        _require(declared is None or collection in declared,
                 f"{at}: unknown collection (declared: {', '.join(declared or [])})")
        _require(isinstance(rows, dict), f"{at}: must map record ids to records")
        entity = domain_file.entities.get(collection)
        schema = entity.record_schema if entity is not None else None
        for key, row in rows.items():
            _require(isinstance(row, dict), f"{at}.{key}: a record must be an object")
            if schema is not None:
                validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
                problem = jsonschema.exceptions.best_match(validator(schema).iter_errors(row))
                if problem is not None:
                    raise Rejected(f"{at}.{key}{_at(problem.absolute_path)}: {problem.message[:200]}")
        world.setdefault(collection, {}).update(copy_world(rows))
    return world


def check_request(request: str, facts: dict[str, Any]) -> None:
    for name, value in facts.items():
        for part in value if isinstance(value, list) else [value]:
            if part is not None and str(part).strip() and str(part).lower() in request.lower():
                raise Rejected(f"request: states the fact {name} ({_short(part)}); the agent must ask for it")


def outcome_sources(answer: dict[str, Any], outputs: list[Any], facts: dict[str, Any]) -> list[ArgSource]:
    written = answer.get("outcome") or []
    sources = []
    for index, item in enumerate(written):
        at = f"outcome[{index}]"
        _require(isinstance(item, dict) and isinstance(item.get("step"), int) and not isinstance(item["step"], bool)
                 and 0 <= item["step"] < len(outputs), f"{at}.step: must be a workflow index below {len(outputs)}")
        path = field_path(item.get("field"))
        _require(bool(path) and all(isinstance(k, (str, int)) for k in path), f"{at}.field: must be a key or keys")
        try:
            read_field(outputs[item["step"]], path)
        except KeyError as exc:
            raise Rejected(f"{at}.field: {exc.args[0]} of workflow[{item['step']}]") from None
        sources.append(ArgSource("step", step=item["step"], path=path))
    if written:
        return sources
    last = outputs[-1]
    if not isinstance(last, dict):
        return [ArgSource("step", step=len(outputs) - 1, path=[])] if not isinstance(last, list) else []
    # The fields the model wrote for the last call first: those are the ones it meant to report.
    wrote = answer["workflow"][-1]["output"]
    order = [k for k in wrote if k in last] if isinstance(wrote, dict) else []
    order += [k for k in sorted(last) if k not in order]
    picked = [key for key in order if key not in facts and last[key] is not None
              and not isinstance(last[key], (dict, list)) and not any(same_value(last[key], f) for f in facts.values())]
    return [ArgSource("step", step=len(outputs) - 1, path=[key]) for key in picked[:DEFAULT_OUTCOME_FIELDS]]


def phrasings(request: str, facts: dict[str, Any], fact_phrases: dict[str, str]) -> list[str]:
    """The request alone, and with each single fact stated -- never all of them, so an
    instruction always leaves a fact for the agent to ask."""
    escaped = request.strip().replace("{", "{{").replace("}", "}}")
    if len(facts) < 2:
        return [escaped]
    said = {n: fact_phrases.get(n, n.replace("_", " ")).replace("{", "{{").replace("}", "}}") for n in facts}
    return [escaped] + [f"{escaped} My {said[name]} is {{{name}}}." for name in facts]


def condition_reason(spec: Any, names: set[str], calls: list[dict[str, Any]], outputs: list[Any], world: World,
                     domain: Domain) -> str:
    """Why a written condition cannot branch this task ("" when it can)."""
    problem = condition_problem(spec, domain)
    if problem:
        return problem
    if spec["name"] in names:
        return f"duplicate condition name {spec['name']!r}"
    tools = [c["tool"] for c in calls]
    missing = [g for g in spec["guards"] if g not in tools]
    if missing:
        return f"guards {missing} are not called in the workflow"
    if spec["read_tool"] not in tools:
        return f"read_tool {spec['read_tool']!r} is not called in the workflow"
    read = tools.index(spec["read_tool"])  # the call the falsifier and the tree both look at
    late = [g for g in spec["guards"] if tools.index(g) < read]
    if late:
        return f"read_tool {spec['read_tool']!r} is not called before guard {late[0]!r}"
    path = field_path(spec["field"])
    try:
        value = read_field(outputs[read], path)
    except KeyError as exc:
        return f"field: {exc.args[0]} (workflow[{read}] {spec['read_tool']})"
    if not any(same_value(value, a) for a in spec["allowed"]):
        return f"the condition does not hold on this task: field is {_short(value)}, allowed {_short(spec['allowed'])}"
    falsify = spec["falsify"]
    if falsify["key_argument"] not in calls[read]["arguments"]:
        return f"falsify.key_argument {falsify['key_argument']!r} is no argument of workflow[{read}]"
    key = str(calls[read]["arguments"][falsify["key_argument"]]).strip()
    record = world.get(str(falsify["table"]), {}).get(key)
    if not isinstance(record, dict) or falsify["field"] not in record:
        return f"falsify: no record {falsify['table']}[{key!r}] with a field {falsify['field']!r} in the world"
    return ""
