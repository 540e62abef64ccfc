"""Executing a model's function calls on BFCL's backend classes without ``eval``.

BFCL's own executor turns a call string into Python with a regex and ``eval``s it behind a
deny-list of names, which a crafted name escapes. Here a call is data, never code:

1. a call string is parsed with ``ast`` (structured tool calls arrive as name + JSON);
   only ``name(arg, key=literal, ...)`` is accepted: a bare name, no attribute access, no
   ``*``/``**``, and every argument a literal (``ast.literal_eval``), so nested calls,
   names and comprehensions are refused before anything runs;
2. the name must be one of the entry's functions (held-out ones included: BFCL runs any
   method of the entry's classes, and its own gold calls one before it is offered), and a
   public method of the class that owns it;
3. the arguments must match the function's documented parameters: known names, required
   ones present, bounded sizes. Types are not enforced, as BFCL does not enforce them: its
   own ground truth passes ``ticket_id='ticket_001'`` where the doc says integer
   (``multi_turn_*_173``), and refusing what BFCL runs would change its scores;
4. only then is the bound method called on this run's own instance.

A refused call is an observation (``Error during execution: ...``, BFCL's wording), never
an exception for the caller, and nothing is executed for it.
"""

from __future__ import annotations

import ast
import copy
import functools
import importlib
import inspect
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_CALL_CHARS = 20_000
"""Longest call text (or JSON arguments) accepted; BFCL's longest gold call is 6,839."""
MAX_INT_MAGNITUDE = 2**53
"""Larger integers are refused: a backend method may loop or allocate in proportion to one
(MathAPI sets mpmath's precision from an argument)."""
ERROR_PREFIX = "Error during execution: "

class RefusedCall(ValueError):
    """A call that is not executed; the message says why (the model sees it)."""


@dataclass(frozen=True)
class ParsedCall:
    name: str
    positional: tuple[Any, ...]
    keywords: dict[str, Any]


def parse_call_string(text: str) -> ParsedCall:
    """``name(literal, key=literal)`` from text, or RefusedCall. Nothing is evaluated."""
    if not isinstance(text, str):
        raise RefusedCall("a call must be text")
    if len(text) > MAX_CALL_CHARS:
        raise RefusedCall(f"the call is {len(text)} characters long (limit {MAX_CALL_CHARS})")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise RefusedCall(f"not a function call: {type(exc).__name__}") from None
    node = tree.body
    if not isinstance(node, ast.Call):
        raise RefusedCall("not a function call")
    if not isinstance(node.func, ast.Name):
        raise RefusedCall("the function must be a plain name (no attribute access or computed callee)")
    positional = []
    for arg in node.args:
        if isinstance(arg, ast.Starred):
            raise RefusedCall("*arguments are not accepted")
        positional.append(_literal(arg))
    keywords: dict[str, Any] = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise RefusedCall("**arguments are not accepted")
        if kw.arg in keywords:
            raise RefusedCall(f"argument {kw.arg!r} given twice")
        keywords[kw.arg] = _literal(kw.value)
    return ParsedCall(node.func.id, tuple(positional), keywords)


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        raise RefusedCall("arguments must be literals (no names, calls or expressions)") from None


def call_string(name: str, arguments: Mapping[str, Any]) -> str:
    """The canonical call text, as BFCL's ``convert_to_function_call`` writes it."""
    return f"{name}({','.join(f'{k}={v!r}' for k, v in arguments.items())})"


def format_result(result: Any) -> str:
    """A method's return value as the observation text, exactly as BFCL's executor formats it."""
    if type(result) is str:
        return result
    if type(result) is dict:
        try:
            return json.dumps(result)
        except (TypeError, ValueError):
            return str(result)
    return str(result)


class EntryBackends:
    """The backend class instances of one BFCL entry for one run (fresh state), and the only
    way to call their methods.

    ``function_docs`` are the functions this entry may call. Instances are created lazily from
    ``initial_config`` exactly as BFCL creates them.
    """

    def __init__(self, involved_classes: Sequence[str], initial_config: Mapping[str, Any], *,
                 long_context: bool, function_docs: Sequence[Mapping[str, Any]]):
        from bfcl_eval.constants.executable_backend_config import CLASS_FILE_PATH_MAPPING, STATELESS_CLASSES

        self.instances: dict[str, Any] = {}
        for class_name in involved_classes:
            module = importlib.import_module(CLASS_FILE_PATH_MAPPING[class_name])
            instance = getattr(module, class_name)()
            if class_name not in STATELESS_CLASSES:
                instance._load_scenario(copy.deepcopy(initial_config.get(class_name, {})), long_context=long_context)
            self.instances[class_name] = instance
        self._owner: dict[str, str] = {}
        for class_name, instance in self.instances.items():
            for method_name in _public_methods(type(instance)):
                self._owner[method_name] = class_name
        self.docs: dict[str, Mapping[str, Any]] = {doc["name"]: doc for doc in function_docs}

    def execute_text(self, text: str) -> str:
        """Run one call given as text; the observation string (an error for a refused call)."""
        try:
            parsed = parse_call_string(text)
            return self._invoke(parsed.name, parsed.positional, parsed.keywords)
        except RefusedCall as exc:
            return f"{ERROR_PREFIX}refused call: {exc}"

    def execute(self, name: str, arguments: Any) -> str:
        """Run one structured call (name + decoded JSON arguments)."""
        try:
            if not isinstance(arguments, dict):
                raise RefusedCall("arguments must be an object")
            if _size(arguments) > MAX_CALL_CHARS:
                raise RefusedCall(f"arguments longer than {MAX_CALL_CHARS} characters")
            return self._invoke(name, (), arguments)
        except RefusedCall as exc:
            return f"{ERROR_PREFIX}refused call: {exc}"

    def validate(self, name: str, positional: Sequence[Any], keywords: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The bound method and its keyword arguments, or RefusedCall."""
        if not isinstance(name, str) or name not in self.docs:
            raise RefusedCall(f"{str(name)[:80]!r} is not one of the available functions")
        class_name = self._owner.get(name)
        if class_name is None:
            raise RefusedCall(f"{name!r} is not a method of the entry's classes")
        method = getattr(self.instances[class_name], name)
        arguments = dict(keywords)
        if positional:
            names = [p for p in inspect.signature(method).parameters]
            if len(positional) > len(names):
                raise RefusedCall(f"{name} takes at most {len(names)} positional arguments")
            for param, value in zip(names, positional):
                if param in arguments:
                    raise RefusedCall(f"argument {param!r} given twice")
                arguments[param] = value
        params = self.docs[name].get("parameters") or {}
        properties: Mapping[str, Any] = params.get("properties") or {}
        unknown = sorted(set(arguments) - set(properties))
        if unknown:
            raise RefusedCall(f"{name} has no parameter(s) {', '.join(repr(u[:40]) for u in unknown)}")
        missing = [p for p in params.get("required") or [] if p not in arguments]
        if missing:
            raise RefusedCall(f"{name} is missing required argument(s) {', '.join(map(repr, missing))}")
        for key, value in arguments.items():
            _check_bounds(f"{name}.{key}", value)
        return method, arguments

    def _invoke(self, name: str, positional: Sequence[Any], keywords: Mapping[str, Any]) -> str:
        method, arguments = self.validate(name, positional, keywords)
        try:
            return format_result(method(**arguments))
        except Exception as exc:  # the backend's own failure is the observation, as in BFCL
            return f"{ERROR_PREFIX}{exc}"


@functools.cache
def _public_methods(cls: type) -> tuple[str, ...]:
    """The methods a call may name: public functions of the class (BFCL's rule, minus its
    dependence on instance state)."""
    return tuple(name for name, _ in inspect.getmembers(cls, predicate=inspect.isfunction)
                 if not name.startswith("_"))


def _size(value: Any, depth: int = 0) -> int:
    """Roughly the JSON length of decoded arguments, without serialising them."""
    if depth > 20:
        raise RefusedCall("arguments are nested too deeply")
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, dict):
        return 2 + sum(_size(k, depth + 1) + _size(v, depth + 1) + 2 for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return 2 + sum(_size(v, depth + 1) + 1 for v in value)
    return 8


def _check_bounds(where: str, value: Any, depth: int = 0) -> None:
    if depth > 20:
        raise RefusedCall(f"{where} is nested too deeply")
    if isinstance(value, bool):
        return
    if isinstance(value, int) and abs(value) > MAX_INT_MAGNITUDE:
        raise RefusedCall(f"{where} is out of range")
    if isinstance(value, float) and not math.isfinite(value):
        raise RefusedCall(f"{where} must be finite")
    if isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _check_bounds(where, item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_bounds(where, key, depth + 1)
            _check_bounds(where, item, depth + 1)
