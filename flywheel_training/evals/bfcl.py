"""BFCL-v4 multi-turn with any Flywheel ``BatchPolicy``, scored by BFCL's official checker.

The ``bfcl-eval`` package provides the 800 entries (4 categories × 200), the backend API
classes and ``multi_turn_checker``. Flywheel plays the conversation the way BFCL's
function-calling handler does (its scripted user turns; a turn ends when the model answers
without tool calls; held-out functions of ``miss_func`` entries are added with BFCL's
prompt; more than BFCL's step limit in one turn force-terminates the entry), one policy
call per step batched across every live conversation.

Calls are never ``eval``ed: they run through ``safe_calls.EntryBackends`` on instances
created for this entry and trial only.

Scoring is BFCL's ``multi_turn_checker`` logic applied turn by turn as the conversation
goes: at the end of each turn the ground truth of that turn runs on its own fresh
instances, and BFCL's ``state_checker`` and ``response_checker`` compare them with the
conversation's instances and results (an empty turn where the truth has calls fails, as
in BFCL). That is what ``multi_turn_checker`` computes after re-executing the model's
calls on fresh instances, without the re-execution. ``official_check`` runs
``multi_turn_checker`` itself (its executor swapped for the safe one, same signature and
result format, per-check instances instead of BFCL's module globals keyed by model name);
the tests check that both agree.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from flywheel_assets.world.rollout import BatchPolicy, ContextExhausted, PolicyRequest, normalize_assistant
from flywheel_training.evals.external import ExternalResult, ExternalTaskRef, require
from flywheel_training.evals.heldout import pass_hat_k
from flywheel_training.evals.safe_calls import (ERROR_PREFIX, EntryBackends, RefusedCall, call_string,
                                                parse_call_string)

CATEGORIES = ("base", "miss_func", "miss_param", "long_context")
REFUSED_SENTINEL = "<refused call>"
"""Stands for a refused call in what the checker re-executes: it does not parse, so the
checker's (safe) executor refuses it again and records an error result, as the model saw."""


@dataclass
class BfclEntry:
    id: str
    category: str                            # short name: base, miss_func, ...
    question: list[list[dict[str, Any]]]     # the scripted user messages of each turn
    functions: list[dict[str, Any]]          # offered from the first turn
    held_out: dict[int, list[dict[str, Any]]]  # turn index -> docs added at that turn
    initial_config: dict[str, Any]
    involved_classes: list[str]
    ground_truth: list[list[str]]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)  # the entry as BFCL loads it

    @property
    def long_context(self) -> bool:
        return "long_context" in self.category

    def all_functions(self) -> list[dict[str, Any]]:
        return self.functions + [doc for docs in self.held_out.values() for doc in docs]


@dataclass
class EntryOutcome:
    entry_id: str
    category: str
    trial: int
    valid: bool
    error_type: str
    error_message: str
    decoded: list[list[list[str]]]  # per turn, per step: the calls the checker re-executed
    refused_calls: int
    steps: int


@dataclass
class BfclRun:
    model: str
    trials: int
    outcomes: list[EntryOutcome]
    results: list[ExternalResult]


def full_category(category: str) -> str:
    short = category.removeprefix("multi_turn_")
    if short not in CATEGORIES:
        raise ValueError(f"unknown BFCL multi-turn category {category!r}; choose from {', '.join(CATEGORIES)}")
    return f"multi_turn_{short}"


def load_entries(category: str, limit: int | None = None) -> list[BfclEntry]:
    """The category's entries (in BFCL's order) with their ground truth."""
    utils = require("bfcl_eval.utils", "bfcl-eval")
    name = full_category(category)
    raw_entries = utils.load_dataset_entry(name)
    truths = {g["id"]: g["ground_truth"] for g in utils.load_ground_truth_entry(name)}
    entries = []
    for raw in raw_entries[:limit] if limit is not None else raw_entries:
        held_out = {int(turn): list(docs) for turn, docs in (raw.get("missed_function") or {}).items()}
        entries.append(BfclEntry(raw["id"], name.removeprefix("multi_turn_"), raw["question"], list(raw["function"]),
                                 held_out, raw.get("initial_config") or {}, list(raw["involved_classes"]),
                                 truths[raw["id"]], raw))
    return entries


_TOOLS_CACHE: dict[str, list[dict[str, Any]]] = {}


def openai_tools(function_docs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The entry's functions as OpenAI chat-completions tools, converted by BFCL itself.

    Entries share a handful of function sets, so conversions are cached by content; the
    returned list is shared and must not be mutated.
    """
    key = "\n".join(doc["name"] for doc in function_docs)  # a name's doc is fixed within a package version
    if key not in _TOOLS_CACHE:
        handler_utils = require("bfcl_eval.model_handler.utils", "bfcl-eval")
        enums = require("bfcl_eval.constants.enums", "bfcl-eval")
        mappings = require("bfcl_eval.constants.type_mappings", "bfcl-eval")
        _TOOLS_CACHE[key] = handler_utils.convert_to_tool(list(function_docs), mappings.GORILLA_TO_OPENAPI,
                                                          enums.ModelStyle.OPENAI_COMPLETIONS)
    return _TOOLS_CACHE[key]


# --- the conversation -----------------------------------------------------------------------
@dataclass
class _Conversation:
    entry: BfclEntry
    trial: int
    backends: EntryBackends
    tools: list[dict[str, Any]]
    messages: list[dict[str, Any]] = field(default_factory=list)
    turn: int = -1
    steps_in_turn: int = 0
    steps: int = 0
    refused: int = 0
    decoded: list[list[list[str]]] = field(default_factory=list)
    results: list[str] = field(default_factory=list)  # every call's observation, all turns
    truth: EntryBackends | None = None                # the ground truth's own instances
    verdict: dict[str, Any] | None = None             # the first failure, as BFCL reports it
    force_quit: str = ""
    done: bool = False


def _start_turn(conv: _Conversation, additional_function_prompt: str) -> None:
    conv.turn += 1
    conv.steps_in_turn = 0
    if conv.turn >= len(conv.entry.question):
        conv.done = True
        return
    conv.decoded.append([])
    turn_messages = list(conv.entry.question[conv.turn])
    if conv.turn in conv.entry.held_out:
        conv.tools = conv.tools + openai_tools(conv.entry.held_out[conv.turn])
        turn_messages = [{"role": "user", "content": additional_function_prompt}]
    conv.messages.extend(dict(m) for m in turn_messages)


def _apply_reply(conv: _Conversation, reply: Any, step_limit: int) -> None:
    if isinstance(reply, ContextExhausted):
        conv.force_quit = f"the conversation outgrew the model's context: {reply.detail}"
        conv.done = True
        return
    message, calls = normalize_assistant(reply, len(conv.messages))
    conv.messages.append(message)
    conv.steps += 1
    if not calls:
        return  # an answer without calls ends the turn, as in BFCL
    executed: list[str] = []
    for call in calls:
        if call.arguments is None:
            result, accepted = f"{ERROR_PREFIX}refused call: {call.problem}", False
        else:
            result = conv.backends.execute(call.name, call.arguments)
            accepted = not result.startswith(f"{ERROR_PREFIX}refused call:")
        executed.append(call_string(call.name, call.arguments) if accepted else REFUSED_SENTINEL)
        conv.results.append(result)
        conv.refused += not accepted
        conv.messages.append({"role": "tool", "tool_call_id": call.call_id, "name": call.name, "content": result})
    conv.decoded[conv.turn].append(executed)
    conv.steps_in_turn += 1
    if conv.steps_in_turn > step_limit:
        conv.force_quit = f"more than {step_limit} steps in turn {conv.turn}"
        conv.done = True


def play(policy: BatchPolicy, entries: Sequence[BfclEntry], *, trials: int = 1) -> list[_Conversation]:
    """Play every entry ``trials`` times; each step is one ``policy.generate`` call over all
    live conversations."""
    prompts = require("bfcl_eval.constants.default_prompts", "bfcl-eval")
    conversations = []
    for trial in range(trials):
        for entry in entries:
            # Every function of the entry may be called, held-out ones included, as in BFCL:
            # its own gold for multi_turn_miss_func_49 calls `tail` two turns before offering it.
            backends = EntryBackends(entry.involved_classes, entry.initial_config, long_context=entry.long_context,
                                     function_docs=entry.all_functions())
            conv = _Conversation(entry, trial, backends, openai_tools(entry.functions))
            conv.truth = EntryBackends(entry.involved_classes, entry.initial_config,
                                       long_context=entry.long_context, function_docs=entry.all_functions())
            _start_turn(conv, prompts.DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC)
            conversations.append(conv)
    while live := [c for c in conversations if not c.done]:
        requests = [PolicyRequest(list(c.messages), c.tools, ExternalTaskRef(f"bfcl:{c.entry.id}", c.entry), c.trial)
                    for c in live]
        replies = policy.generate(requests)
        if len(replies) != len(live):
            raise RuntimeError(f"policy {policy.name!r} returned {len(replies)} replies for {len(live)} requests")
        for conv, reply in zip(live, replies):
            calls_before = len(conv.decoded[conv.turn])
            _apply_reply(conv, reply, prompts.MAXIMUM_STEP_LIMIT)
            if not conv.done and len(conv.decoded[conv.turn]) == calls_before:
                _check_turn(conv)
                _start_turn(conv, prompts.DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC)
    return conversations


def _check_turn(conv: _Conversation) -> None:
    """``multi_turn_checker``'s per-turn checks, on the live instances (see the module doc)."""
    checker = require("bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker", "bfcl-eval")
    truth_calls = conv.entry.ground_truth[conv.turn]
    truth_results = [conv.truth.execute_text(text) for text in truth_calls]
    if conv.verdict is not None or not truth_calls:
        return  # an earlier turn failed (the truth still runs: state stays in step) / nothing to check
    if not conv.decoded[conv.turn]:
        conv.verdict = {"valid": False, "error_type": "multi_turn:empty_turn_model_response",
                        "error_message": f"Model response list is empty for turn {conv.turn}"}
        return
    for verdict in (checker.state_checker(conv.backends.instances, conv.truth.instances),
                    checker.response_checker(conv.results, truth_results, conv.turn)):
        if not verdict["valid"]:
            conv.verdict = verdict
            return


# --- scoring --------------------------------------------------------------------------------
_CHECKER_LOCK = threading.Lock()


@contextmanager
def safe_checker(entry: BfclEntry) -> Iterator[Any]:
    """BFCL's ``multi_turn_checker`` with its executor replaced by the safe one for this check."""
    checker = require("bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker", "bfcl-eval")
    store: dict[str, EntryBackends] = {}
    docs = entry.all_functions()

    def execute_multi_turn_func_call(func_call_list: list[str], initial_config: dict, involved_classes: list,
                                     model_name: str, test_entry_id: str, long_context: bool = False,
                                     is_evaL_run: bool = False) -> tuple[list[str], dict]:
        key = f"{model_name}/{test_entry_id}/{is_evaL_run}"
        if key not in store:
            store[key] = EntryBackends(involved_classes, initial_config, long_context=long_context,
                                       function_docs=docs)
        backends = store[key]
        return [backends.execute_text(text) for text in func_call_list], dict(backends.instances)

    with _CHECKER_LOCK:
        original = checker.execute_multi_turn_func_call
        checker.execute_multi_turn_func_call = execute_multi_turn_func_call
        try:
            yield checker.multi_turn_checker
        finally:
            checker.execute_multi_turn_func_call = original


def official_check(entry: BfclEntry, decoded: list[list[list[str]]], model_name: str) -> dict[str, Any]:
    """BFCL's ``multi_turn_checker`` verdict (``{"valid": bool, ...}``) for the decoded calls
    of every turn, re-executed on fresh instances by the safe executor."""
    if len(decoded) != len(entry.ground_truth):
        return {"valid": False, "error_type": "multi_turn:force_terminated",
                "error_message": f"{len(decoded)} turns played of {len(entry.ground_truth)}"}
    with safe_checker(entry) as multi_turn_checker:
        return multi_turn_checker(decoded, entry.ground_truth, entry.raw, full_category(entry.category), model_name)


def score(conversations: Iterable[_Conversation]) -> list[EntryOutcome]:
    outcomes = []
    for conv in conversations:
        if conv.force_quit:
            verdict = {"valid": False, "error_type": "multi_turn:force_terminated", "error_message": conv.force_quit}
        else:
            verdict = conv.verdict or {"valid": True}
        outcomes.append(EntryOutcome(conv.entry.id, conv.entry.category, conv.trial, bool(verdict["valid"]),
                                     verdict.get("error_type", ""), str(verdict.get("error_message", "")),
                                     conv.decoded, conv.refused, conv.steps))
    return outcomes


def summarize(outcomes: Sequence[EntryOutcome], model: str, trials: int) -> list[ExternalResult]:
    """Per category: accuracy (BFCL's metric, the mean over all trials) and, with several
    trials, pass^k for every k (the chance that k of an entry's trials all pass)."""
    results = []
    for category in dict.fromkeys(o.category for o in outcomes):
        mine = [o for o in outcomes if o.category == category]
        by_entry: dict[str, int] = {}
        for o in mine:
            by_entry[o.entry_id] = by_entry.get(o.entry_id, 0) + o.valid
        results.append(ExternalResult("bfcl", category, "accuracy", sum(o.valid for o in mine) / len(mine), 1,
                                      trials, len(by_entry), model))
        for k in range(2, trials + 1):
            results.append(ExternalResult("bfcl", category, f"pass^{k}", pass_hat_k(list(by_entry.values()), trials, k),
                                          k, trials, len(by_entry), model))
    return results


def evaluate(policy: BatchPolicy, categories: Sequence[str] = CATEGORIES, *, limit: int | None = None,
             trials: int = 1) -> BfclRun:
    """Play and score ``limit`` entries (all by default) of each category, ``trials`` times."""
    if trials < 1:
        raise ValueError("trials must be at least 1")
    entries = [e for c in categories for e in load_entries(c, limit)]
    outcomes = score(play(policy, entries, trials=trials))
    return BfclRun(policy.name, trials, outcomes, summarize(outcomes, policy.name, trials))


# --- gold replay ----------------------------------------------------------------------------
class GoldPolicy:
    """A scripted policy that answers each turn with the entry's ground-truth calls (one
    step), then with a short text that ends the turn. It reads the privileged payload."""

    name = "bfcl-gold"

    def generate(self, requests: Sequence[PolicyRequest]) -> list[dict[str, Any]]:
        return [self._reply(r) for r in requests]

    def _reply(self, request: PolicyRequest) -> dict[str, Any]:
        entry: BfclEntry = request.instance.payload
        if request.messages[-1].get("role") != "user":
            return {"role": "assistant", "content": "Done."}
        turn = sum(1 for m in request.messages if m.get("role") == "user") - 1
        calls = [gold_tool_call(entry, text, f"gold_{turn}_{i}") for i, text in enumerate(entry.ground_truth[turn])]
        return {"role": "assistant", "content": None if calls else "I cannot do that with these functions.",
                "tool_calls": calls}


def gold_tool_call(entry: BfclEntry, text: str, call_id: str) -> dict[str, Any]:
    """A ground-truth call string as an OpenAI tool call (positional arguments named)."""
    parsed = parse_call_string(text)
    arguments = dict(parsed.keywords)
    if parsed.positional:
        names = positional_names(entry, parsed.name)
        if len(parsed.positional) > len(names):
            raise RefusedCall(f"gold call {text[:80]!r} has too many positional arguments")
        arguments.update(zip(names, parsed.positional))
    return {"id": call_id, "type": "function", "function": {"name": parsed.name, "arguments": json.dumps(arguments)}}


def positional_names(entry: BfclEntry, function_name: str) -> list[str]:
    import importlib
    import inspect

    config = require("bfcl_eval.constants.executable_backend_config", "bfcl-eval")
    for class_name in entry.involved_classes:
        cls = getattr(importlib.import_module(config.CLASS_FILE_PATH_MAPPING[class_name]), class_name)
        method = getattr(cls, function_name, None)
        if callable(method) and not function_name.startswith("_"):
            return [p for p in inspect.signature(method).parameters if p != "self"]
    raise RefusedCall(f"{function_name!r} is not a method of {entry.involved_classes}")


def gold_replay(categories: Sequence[str] = CATEGORIES, *, limit: int | None = None) -> BfclRun:
    """Replay the ground truth through the full harness; every entry should be valid."""
    return evaluate(GoldPolicy(), categories, limit=limit)


_reference_runs = itertools.count()


def reference_replay(entries: Sequence[BfclEntry]) -> int:
    """BFCL's own replay-and-check: its unmodified ``multi_turn_checker`` (its ``eval``
    executor) given the ground truth as the model's decoded result, as its eval runner
    would after inference. Runs only BFCL's data, never model output. Returns how many
    entries it scores valid."""
    checker = require("bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker", "bfcl-eval")
    model_name = f"reference_{next(_reference_runs)}"  # BFCL caches instances in globals by model name
    valid = 0
    with _CHECKER_LOCK:  # the shipped executor, not a safe_checker swap in progress
        for entry in entries:
            decoded = [[turn] if turn else [] for turn in entry.ground_truth]
            valid += bool(checker.multi_turn_checker(decoded, entry.ground_truth, entry.raw,
                                                     full_category(entry.category), model_name)["valid"])
    return valid


@dataclass(frozen=True)
class GoldComparison:
    """Gold replay through Flywheel's harness beside the benchmark's own replay."""

    benchmark: str
    category: str
    total: int
    valid: int
    seconds: float
    reference_valid: int
    reference_seconds: float

    @property
    def ratio(self) -> float:
        return self.seconds / self.reference_seconds if self.reference_seconds else float("inf")


def compare_gold(categories: Sequence[str] = CATEGORIES, *, limit: int | None = None) -> list[GoldComparison]:
    """Per category: valid/total and seconds for the harness's gold replay (play + check)
    and for BFCL's own replay-and-check of the same entries (loading not timed)."""
    rows = []
    for category in categories:
        entries = load_entries(category, limit)
        start = time.perf_counter()
        valid = sum(o.valid for o in score(play(GoldPolicy(), entries)))
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        reference_valid = reference_replay(entries)
        rows.append(GoldComparison("bfcl", entries[0].category if entries else category, len(entries), valid,
                                   seconds, reference_valid, time.perf_counter() - start))
    return rows
