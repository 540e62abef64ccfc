"""Domain files: a new domain as one YAML (or JSON) document instead of a Python pack.

A domain file declares a name, a policy (markdown), tools as OpenAI function schemas each
marked ``access: read`` or ``access: write``, and optionally entity collections with a JSON
Schema per record, seed records (the initial world, ``{collection: {id: record}}``),
personas, the tools that verify a user's identity, and example workflows. A tool with an
``implementation`` (``module:function``) runs procedurally and exactly; the others need an
LLM tool backend, and a write among them must say in ``changes`` which entity collections
it writes (so the simulator knows which state it may change).

``load_domain_file`` reports every problem at once, each naming the file, the path inside
the document (``tools[2].parameters.properties.amount.type``) and what is wrong.
``examples/domains/`` holds complete files; the README has a guide.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

import jsonschema
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from flywheel_assets.world.domains.base import Domain, SimulatorFailure, Tool, ToolError, transfer_tool
from flywheel_assets.world.tasks import ToolSpec, World, copy_world

TRANSFER_TOOL = "transfer_to_human_agents"

Hook = Callable[[World, dict[str, Any]], Any]
"""A tool's Python implementation: ``(world, arguments) -> output`` (JSON values). It raises
``flywheel_assets.world.domains.base.ToolError`` for a failed precondition; a write may
change ``world`` in place (it runs on a copy that replaces the world only on success)."""


class DomainFileError(ValueError):
    """Everything wrong with one domain file: ``problems`` are (path in the document, message)."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {where}: {what}" if where else f"{source}: {what}"
                                   for where, what in problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ToolDecl(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = Field(min_length=1)
    access: Literal["read", "write"]
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    output: str = ""
    """What the tool returns, in words (shown to the agent after the description)."""
    changes: dict[str, str] = Field(default_factory=dict)
    """For a write: entity collection -> what the call changes in it."""
    implementation: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class Entity(_Strict):
    description: str = ""
    record_schema: dict[str, Any] | None = Field(default=None, alias="schema")


class Persona(_Strict):
    name: str = Field(min_length=1)
    description: str = Field(min_length=1)


class WorkflowStepDecl(_Strict):
    tool: str
    purpose: str = ""


class Workflow(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    steps: list[WorkflowStepDecl] = Field(min_length=1)

    @field_validator("steps", mode="before")
    @classmethod
    def _tool_names_as_steps(cls, steps: Any) -> Any:
        # `steps: [get_claim, file_claim]` is shorthand for steps with no purpose
        return [{"tool": s} if isinstance(s, str) else s for s in steps] if isinstance(steps, list) else steps


class DomainFile(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    policy: str = Field(min_length=1)
    tools: list[ToolDecl] = Field(min_length=1)
    entities: dict[str, Entity] = Field(default_factory=dict)
    records: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    personas: list[Persona] = Field(default_factory=list)
    verification_tools: list[str] = Field(default_factory=list)
    workflows: list[Workflow] = Field(default_factory=list)
    _source: Path | None = PrivateAttr(default=None)
    _hooks: dict[str, Hook] = PrivateAttr(default_factory=dict)

    def tool(self, name: str) -> ToolDecl:
        for decl in self.tools:
            if decl.name == name:
                return decl
        raise KeyError(f"domain file {self.name!r} has no tool {name!r}")

    def world(self) -> World:
        """The initial world: a copy of the seed records."""
        return copy_world(self.records)

    def hook(self, name: str) -> Hook | None:
        """The tool's Python implementation, or None for an LLM-simulated tool."""
        decl = self.tool(name)
        if decl.implementation is None:
            return None
        if name not in self._hooks:
            base = self._source.parent if self._source else None
            self._hooks[name] = resolve_hook(decl.implementation, base)
        return self._hooks[name]

    def to_tool_specs(self) -> list[ToolSpec]:
        """What the agent (and the LLM tool simulating it) sees: the engine's ``ToolSpec`` per
        tool, the output description and what a write changes appended to its description."""
        return [ToolSpec(name=t.name, description=t.description + (f"\nReturns: {t.output}" if t.output else "")
                         + "".join(f"\nChanges {table}: {what}" for table, what in sorted(t.changes.items())),
                         parameters=t.parameters, writes=t.access == "write") for t in self.tools]

    def to_domain(self) -> Domain:
        """The engine's ``Domain`` of this file, for what takes one (the LLM tool backend,
        the system prompt): the file's tools plus the hand-over to a human, the seed records
        as every world. It has no templates or slots: tasks come from the LLM task writer.
        A tool without a hook raises ``ToolError`` here; run the tools through
        ``DomainFileToolBackend``, which sends those to an LLM tool backend instead."""
        tools = [Tool(spec, self.hook(spec.name) or _simulated(self.name, spec.name))
                 for spec in self.to_tool_specs()]
        if not any(t.name == TRANSFER_TOOL for t in tools):
            tools.append(transfer_tool())
        return Domain(name=self.name, description=self.description or self.name.replace("_", " "),
                      policy=self.policy, tools=tuple(tools), slots=(), templates=(),
                      generate_world=lambda rng: self.world(), verification_tools=tuple(self.verification_tools),
                      from_file=True)

    @property
    def simulated_tools(self) -> list[str]:
        """The tools without a Python implementation: an LLM tool simulates them."""
        return [t.name for t in self.tools if t.implementation is None]


class ToolSimulator(Protocol):
    def call(self, world: World, name: str, arguments: dict[str, Any]) -> Any: ...


_SIMULATORS: dict[str, ToolSimulator] = {}


@contextmanager
def simulated_by(domain_name: str, simulator: ToolSimulator) -> Iterator[None]:
    """While the block runs, the domain file's tools without an implementation go to
    ``simulator`` (an LLM tool backend of the stage's tool model, behind its call cache)."""
    previous = _SIMULATORS.get(domain_name)
    _SIMULATORS[domain_name] = simulator
    try:
        yield
    finally:
        if previous is None:
            _SIMULATORS.pop(domain_name, None)
        else:
            _SIMULATORS[domain_name] = previous


def _simulated(domain_name: str, name: str) -> Hook:
    def simulated(world: World, arguments: dict[str, Any]) -> Any:
        simulator = _SIMULATORS.get(domain_name)
        if simulator is None:
            raise SimulatorFailure(f"tool {name} of domain file {domain_name!r} has no Python implementation and no "
                                   "LLM tool simulates it: configure one (--world llm, or --llm-roles with tool)")
        result = simulator.call(world, name, arguments)
        if result.ok:
            return json.loads(result.content)
        if result.failure:  # the simulator's own failure, not the agent's
            raise SimulatorFailure(result.content)
        raise ToolError(result.content.removeprefix("Error: "))

    return simulated


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc] (libyaml when built)
    """PyYAML keeps the last of two equal keys silently; a domain file is refused instead."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def where(loc: Iterable[Any]) -> str:
    """``("tools", 2, "parameters")`` -> ``tools[2].parameters``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def parse_document(text: str, source: str) -> Any:
    """The document in ``text``: JSON when ``source`` ends in .json, else YAML."""
    try:
        if source.endswith(".json"):
            return json.loads(text)
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except json.JSONDecodeError as exc:
        raise DomainFileError(source, [(f"line {exc.lineno}", f"not JSON: {exc.msg}")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        kind = "" if isinstance(exc, yaml.constructor.ConstructorError) else "not YAML: "
        raise DomainFileError(source, [(line, f"{kind}{problem}")]) from None


def load_domain_file(path: str | Path) -> DomainFile:
    """Read, validate and check a domain file (hooks imported); raises ``DomainFileError``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DomainFileError(str(path), [("", f"cannot read: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError:
        raise DomainFileError(str(path), [("", "not UTF-8 text")]) from None
    return domain_file_from_data(parse_document(text, str(path)), source=path)


def domain_file_from_data(data: Any, source: Path | None = None) -> DomainFile:
    """Validate an already parsed document (``source``: where hook modules are looked for)."""
    label = str(source) if source else "<domain file>"
    if isinstance(data, dict) and isinstance(data.get("tools"), list):
        for index, tool in enumerate(data["tools"]):
            if isinstance(tool, dict) and "function" in tool:
                raise DomainFileError(label, [(f"tools[{index}]", "write the function's name, description and "
                                               "parameters directly under the tool, with access: read|write "
                                               "(`flywheel domain import --openai-tools` converts a tool list)")])
    try:
        domain_file = DomainFile.model_validate(data)
    except ValidationError as exc:
        raise DomainFileError(label, [(where(e["loc"]), _pydantic_message(e)) for e in exc.errors()]) from None
    domain_file._source = source
    problems = check(domain_file)
    if problems:
        raise DomainFileError(label, problems)
    return domain_file


def _pydantic_message(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "missing":
        return "required field is missing"
    return error["msg"]


_META_VALIDATORS: dict[type, Any] = {}


def schema_problems(schema: Any, at: str) -> list[tuple[str, str]]:
    """Why ``schema`` is not a JSON Schema (checked against its dialect's metaschema)."""
    if not isinstance(schema, dict):
        return [(at, "a JSON Schema must be an object")]
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    if validator_class not in _META_VALIDATORS:  # building one resolves the whole metaschema: once per dialect
        _META_VALIDATORS[validator_class] = validator_class(validator_class.META_SCHEMA)
    problem = jsonschema.exceptions.best_match(_META_VALIDATORS[validator_class].iter_errors(schema))
    if problem is None:
        return []
    return [(where([at, *problem.absolute_path]) if problem.absolute_path else at,
             f"not a JSON Schema: {problem.message}")]


def check(domain_file: DomainFile) -> list[tuple[str, str]]:
    """Every problem beyond the field types: names, schemas, writes, references, hooks."""
    problems: list[tuple[str, str]] = []
    first_at: dict[str, int] = {}
    for index, decl in enumerate(domain_file.tools):
        at = f"tools[{index}]"
        if decl.name in first_at:
            problems.append((f"{at}.name", f"duplicate tool name {decl.name!r} (first at tools[{first_at[decl.name]}])"))
        first_at.setdefault(decl.name, index)
        problems += schema_problems(decl.parameters, f"{at}.parameters")
        if decl.parameters.get("type") != "object":
            problems.append((f"{at}.parameters.type", 'a tool\'s parameters must be an object schema ("type": "object")'))
        problems += _write_problems(domain_file, decl, at)
        if decl.implementation is not None:
            try:
                domain_file.hook(decl.name)
            except HookError as exc:
                problems.append((f"{at}.implementation", str(exc)))
    problems += _entity_problems(domain_file)
    tool_names = sorted(first_at)
    known = f"(tools: {', '.join(tool_names)})"
    for index, name in enumerate(domain_file.verification_tools):
        if name not in first_at:
            problems.append((f"verification_tools[{index}]", f"unknown tool {name!r} {known}"))
    for w_index, workflow in enumerate(domain_file.workflows):
        for s_index, wf_step in enumerate(workflow.steps):
            if wf_step.tool not in first_at:
                problems.append((f"workflows[{w_index}].steps[{s_index}].tool", f"unknown tool {wf_step.tool!r} {known}"))
    problems += _duplicates("workflows", [w.name for w in domain_file.workflows])
    problems += _duplicates("personas", [p.name for p in domain_file.personas])
    return problems


def _write_problems(domain_file: DomainFile, decl: ToolDecl, at: str) -> list[tuple[str, str]]:
    if decl.access == "read":
        return [(f"{at}.changes", f"read tool {decl.name!r} cannot change the world; mark it access: write")
                ] if decl.changes else []
    if decl.implementation is None and not decl.changes:
        return [(at, f"write tool {decl.name!r} has no way to change the world: give it an implementation "
                     "(module:function) or `changes` naming the entity collection(s) it writes")]
    collections = collection_names(domain_file)
    if not collections:  # a file without entities leaves the simulated world's shape open
        return []
    return [(f"{at}.changes.{name}", f"unknown entity collection {name!r} (declared: {', '.join(collections)})")
            for name in decl.changes if name not in collections]


def collection_names(domain_file: DomainFile) -> list[str]:
    return sorted(set(domain_file.entities) | set(domain_file.records))


def _entity_problems(domain_file: DomainFile) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for name, entity in domain_file.entities.items():
        if entity.record_schema is not None:
            problems += schema_problems(entity.record_schema, f"entities.{name}.schema")
    for collection, rows in domain_file.records.items():
        entity = domain_file.entities.get(collection)
        if domain_file.entities and entity is None:
            problems.append((f"records.{collection}", f"no entity collection {collection!r} is declared "
                                                      f"(entities: {', '.join(sorted(domain_file.entities))})"))
            continue
        if entity is None or entity.record_schema is None or schema_problems(entity.record_schema, ""):
            continue
        validator_class = jsonschema.validators.validator_for(entity.record_schema,
                                                              default=jsonschema.Draft202012Validator)
        validator = validator_class(entity.record_schema)
        for record_id, record in rows.items():
            problem = jsonschema.exceptions.best_match(validator.iter_errors(record))
            if problem is not None:
                problems.append((where(["records", collection, record_id, *problem.absolute_path]), problem.message))
    return problems


def _duplicates(field: str, names: list[str]) -> list[tuple[str, str]]:
    first: dict[str, int] = {}
    problems = []
    for index, name in enumerate(names):
        if name in first:
            problems.append((f"{field}[{index}].name", f"duplicate name {name!r} (first at {field}[{first[name]}])"))
        first.setdefault(name, index)
    return problems


class HookError(ValueError):
    """A tool's ``implementation`` does not resolve to a callable."""


def resolve_hook(reference: str, base_dir: Path | None) -> Hook:
    """``module:function``. The module is looked for first as a file beside the domain file
    (``base_dir/module.py``, dots as folders), so a domain file and its hooks can be copied
    together without installing anything, then on the Python path."""
    module_name, _, function_name = reference.partition(":")
    candidate = base_dir / (module_name.replace(".", "/") + ".py") if base_dir else None
    try:
        if candidate is not None and candidate.is_file():
            module = _module_from_file(candidate)
        else:
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and not module_name.startswith(exc.name) and not exc.name.startswith(module_name):
            raise HookError(f"importing {module_name!r} failed: {exc}") from None  # a missing dependency of the hook
        looked = f"{candidate} and " if candidate else ""
        raise HookError(f"cannot import module {module_name!r} (looked for {looked}the Python path)") from None
    except Exception as exc:  # noqa: BLE001 (any error in the user's module is reported as such)
        raise HookError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    function = getattr(module, function_name, None)
    if function is None:
        raise HookError(f"module {module_name!r} has no function {function_name!r}")
    if not callable(function):
        raise HookError(f"{reference} is not a function")
    return function


def _module_from_file(path: Path) -> Any:
    # A name unique to the file: two domain folders may both have a hooks.py
    name = "flywheel_domain_hooks_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def summary(domain_file: DomainFile) -> dict[str, Any]:
    """What ``flywheel domain check`` prints: the tools by kind, entities, personas, workflows."""
    tools = domain_file.tools
    return {
        "name": domain_file.name,
        "source": str(domain_file._source) if domain_file._source else None,
        "tools": len(tools),
        "reads": [t.name for t in tools if t.access == "read"],
        "writes": [t.name for t in tools if t.access == "write"],
        "procedural": [t.name for t in tools if t.implementation is not None],
        "llm_simulated": [t.name for t in tools if t.implementation is None],
        "entities": {name: len(domain_file.records.get(name, {})) for name in collection_names(domain_file)},
        "personas": [p.name for p in domain_file.personas],
        "verification_tools": list(domain_file.verification_tools),
        "workflows": [w.name for w in domain_file.workflows],
        "policy_chars": len(domain_file.policy),
    }



_LOADED: dict[str, tuple[str, DomainFile]] = {}  # domain name -> (content sha256, file)


def use_domain_files(paths: Iterable[str | Path]) -> list[DomainFile]:
    """Load the domain files (``DomainFileError`` naming the place of every problem) and make
    their domains known to ``get_domain`` in this process; a file already loaded with the
    same content is reused, so repeated calls are cheap. Two files may not share a name."""
    from flywheel_assets.world.domains import register

    files = []
    for path in paths:
        path = Path(path)
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            raise DomainFileError(str(path), [("", f"cannot read: {exc.strerror or exc}")]) from None
        cached = next((f for sha, f in _LOADED.values() if sha == digest and f._source == path), None)
        domain_file = cached or load_domain_file(path)
        other = _LOADED.get(domain_file.name)
        if other is not None and other[1]._source is not None and other[1]._source.resolve() != path.resolve():
            raise DomainFileError(str(path), [("name", f"domain {domain_file.name!r} is already defined by "
                                                       f"{other[1]._source}")])
        if cached is None:
            register(domain_file.to_domain())
            _LOADED[domain_file.name] = (digest, domain_file)
        files.append(domain_file)
    return files


def loaded_domain_name(path: str | Path) -> str:
    """The domain name of a file ``use_domain_files`` loaded in this process (no file I/O)."""
    path = Path(path)
    for _, domain_file in _LOADED.values():
        if domain_file._source == path:
            return domain_file.name
    return use_domain_files([path])[0].name


def loaded_domain_file(name: str) -> DomainFile | None:
    """The domain file a registered domain came from (None for a built-in pack)."""
    entry = _LOADED.get(name)
    return entry[1] if entry else None
