"""BFCL-v4 multi-turn through Flywheel's harness: gold replay, the safe executor against
injection attempts, fresh backend state per entry and trial, and a run against a scripted
OpenAI-compatible server over HTTP.

Needs the benchmark packages (``python -m flywheel_training.evals.install``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from support.scripted_openai import ScriptedOpenAI, tool_call

from flywheel_assets.world.rollout import PolicyRequest
from flywheel_training.evals import bfcl
from flywheel_training.evals.safe_calls import EntryBackends, RefusedCall, parse_call_string
from flywheel_training.policies.openai_compat import OpenAICompatiblePolicy

# The first entries of every category, plus the two whose gold once tripped stricter checks
# (a string where the doc says integer; a held-out function called before it is offered).
SAMPLE = {"base": [0, 1, 2, 173], "miss_func": [0, 1, 49], "miss_param": [0, 1], "long_context": [0, 1]}


def sample_entries() -> list[bfcl.BfclEntry]:
    out = []
    for category, indices in SAMPLE.items():
        by_id = {e.id: e for e in bfcl.load_entries(category)}
        out += [by_id[f"multi_turn_{category}_{i}"] for i in indices]
    return out


def test_gold_replay_of_a_fixed_sample_is_all_valid() -> None:
    entries = sample_entries()
    outcomes = bfcl.score(bfcl.play(bfcl.GoldPolicy(), entries))
    assert [(o.entry_id, o.error_type) for o in outcomes if not o.valid] == []
    assert len(outcomes) == len(entries) and all(o.refused_calls == 0 for o in outcomes)


def test_gold_comparison_reports_both_replays_of_the_same_entries() -> None:
    [row] = bfcl.compare_gold(["long_context"], limit=2)
    assert (row.benchmark, row.category, row.total, row.valid, row.reference_valid) == (
        "bfcl", "long_context", 2, 2, 2)
    assert row.seconds > 0 and row.reference_seconds > 0


@pytest.mark.slow
def test_gold_replay_of_all_800_entries_is_all_valid() -> None:
    run = bfcl.gold_replay()
    assert len(run.outcomes) == 800
    assert [o.entry_id for o in run.outcomes if not o.valid] == []
    assert {(r.category, r.metric, r.value, r.entries) for r in run.results} == {
        (c, "accuracy", 1.0, 200) for c in bfcl.CATEGORIES}


class Flawed:
    """The gold calls with one flaw per entry, so entries fail in different ways (or pass,
    where the flaw changes nothing): silent on turn 1 (empty turn), the last call of every
    turn dropped (state or response mismatch), or a stray call in a turn whose truth is empty."""

    name = "flawed"

    def generate(self, requests: Sequence[PolicyRequest]) -> list[dict[str, Any]]:
        gold = bfcl.GoldPolicy().generate(requests)
        replies = []
        for request, reply in zip(requests, gold):
            entry, turn = request.instance.payload, sum(m["role"] == "user" for m in request.messages) - 1
            flaw = int(entry.id.rsplit("_", 1)[1]) % 3
            calls = reply.get("tool_calls") or []
            if flaw == 0 and turn == 1 and calls:
                reply = {"role": "assistant", "content": "I'd rather not."}
            elif flaw == 1 and len(calls) > 1:
                reply = {**reply, "tool_calls": calls[:-1]}
            elif flaw == 2 and request.messages[-1]["role"] == "user" and not calls:
                reply = {"role": "assistant", "content": None, "tool_calls": [tool_call("x", "pwd", {})]}
            replies.append(reply)
        return replies


def test_turn_by_turn_scoring_agrees_with_bfcls_multi_turn_checker() -> None:
    entries = bfcl.load_entries("base", 6) + bfcl.load_entries("miss_param", 3) + bfcl.load_entries("miss_func", 3)
    conversations = bfcl.play(Flawed(), entries) + bfcl.play(bfcl.GoldPolicy(), entries[:3])
    ours = [(o.valid, o.error_type) for o in bfcl.score(conversations)]
    official = [bfcl.official_check(c.entry, c.decoded, "flawed") for c in conversations]
    assert ours == [(v["valid"], v.get("error_type", "")) for v in official]
    assert {error for valid, error in ours if not valid} >= {
        "multi_turn:empty_turn_model_response", "multi_turn:instance_state_mismatch"}
    assert ours[-3:] == [(True, "")] * 3


# --- injection --------------------------------------------------------------------------------
def injections(marker: Path) -> list[str]:
    touch = f"__import__('os').system('touch {marker}')"
    return [
        touch,                                                   # attribute access on a call
        f"ls(a={touch})",                                        # a nested call as an argument
        f"cd(folder=open('{marker}', 'w').name)",                # a builtin call inside an argument
        f"os.system('touch {marker}')",                          # attribute access
        f"[x for x in ().__class__.__base__.__subclasses__()]",  # not a call at all
        "_load_scenario(scenario={}, long_context=False)",       # a private method
        "eval('1+1')",                                           # a name that is not a function
        "echo(content='" + "x" * 1_000_000 + "', file_name='a.txt')",  # a huge string
        "mkdir(dir_name='d', mode=0o777, extra=1)",              # unknown parameters
        "power(base=10, exponent=10**100)",                      # an expression, not a literal
        "power(base=10, exponent=" + "9" * 40 + ")",             # a literal out of range
    ]


def test_bfcls_own_executor_runs_the_injection(tmp_path: Path) -> None:
    """The control: the payload is live, BFCL's deny-list lets it through."""
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils import execute_multi_turn_func_call

    marker = tmp_path / "pwned_by_bfcl"
    entry = bfcl.load_entries("base", 1)[0]
    execute_multi_turn_func_call([injections(marker)[0]], entry.initial_config, entry.involved_classes,
                                 "control_probe", entry.id)
    assert marker.exists()


def test_injection_strings_are_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    entry = bfcl.load_entries("base", 1)[0]
    backends = EntryBackends(entry.involved_classes, entry.initial_config, long_context=False,
                             function_docs=entry.all_functions() + [{"name": "power", "parameters": {
                                 "properties": {"base": {}, "exponent": {}}, "required": []}}])
    before = {name: json.dumps(vars(i), default=str, sort_keys=True) for name, i in backends.instances.items()}
    for text in injections(marker):
        assert backends.execute_text(text).startswith("Error during execution: refused call:"), text[:60]
    assert not marker.exists()
    after = {name: json.dumps(vars(i), default=str, sort_keys=True) for name, i in backends.instances.items()}
    assert after == before


def test_injection_tool_calls_through_the_harness_are_refused_and_scored(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    entry = bfcl.load_entries("base", 1)[0]
    evil = [tool_call("c0", f"__import__('os').system", {"command": f"touch {marker}"}),
            tool_call("c1", "__import__", {"name": "os"}),
            tool_call("c2", "mkdir", {"dir_name": f"x', __import__('os').system('touch {marker}'), '"}),
            tool_call("c3", "cd", "{not json"),
            tool_call("c4", "_load_scenario", {"scenario": {}}),
            tool_call("c5", "echo", {"content": "y" * 1_000_000, "file_name": "big.txt"})]

    class Evil:
        name = "evil"

        def generate(self, requests: Sequence[PolicyRequest]) -> list[dict[str, Any]]:
            return [{"role": "assistant", "content": None, "tool_calls": evil} if r.messages[-1]["role"] == "user"
                    else {"role": "assistant", "content": "ok"} for r in requests]

    [conversation] = bfcl.play(Evil(), [entry])
    [outcome] = bfcl.score([conversation])
    assert not marker.exists()
    results = [m["content"] for m in conversation.messages if m["role"] == "tool"]
    # c2 is a legal call: its odd directory name is data, created inside the fake file system.
    refused = [r for r in results if r.startswith("Error during execution: refused call:")]
    assert len(results) == 6 * len(entry.question) and len(refused) == 5 * len(entry.question)
    assert outcome.refused_calls == 5 * len(entry.question) and outcome.valid is False


def test_parse_accepts_literals_only() -> None:
    assert parse_call_string("mv(source='a', destination=\"b\")").keywords == {"source": "a", "destination": "b"}
    assert parse_call_string("sort('f.txt')").positional == ("f.txt",)
    for text in ["f(*args)", "f(**kw)", "f(x=y)", "f(x=1, x=2)", "a.b()", "f()()", "1+1", ""]:
        with pytest.raises(RefusedCall):
            parse_call_string(text)


# --- fresh state ------------------------------------------------------------------------------
class MkdirTwice:
    """Creates the same directory twice per conversation: the first must succeed in every
    entry and trial if each starts from its own fresh file system."""

    name = "mkdir-probe"

    def generate(self, requests: Sequence[PolicyRequest]) -> list[dict[str, Any]]:
        replies = []
        for r in requests:
            if r.messages[-1]["role"] == "user" and sum(m["role"] == "user" for m in r.messages) == 1:
                calls = [tool_call(call_id, "mkdir", {"dir_name": "fw_probe"}) for call_id in ("a", "b")]
                replies.append({"role": "assistant", "content": None, "tool_calls": calls})
            else:
                replies.append({"role": "assistant", "content": "done"})
        return replies


def test_every_entry_and_trial_gets_fresh_instances() -> None:
    import bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils as bfcl_executor

    globals_before = set(vars(bfcl_executor))
    entries = [e for e in bfcl.load_entries("base", 4) if "GorillaFileSystem" in e.involved_classes][:2]
    conversations = bfcl.play(MkdirTwice(), entries, trials=2)
    bfcl.score(conversations)
    assert len(conversations) == 4
    for conv in conversations:
        first, second = [m["content"] for m in conv.messages if m["role"] == "tool"][:2]
        assert first == "None" and "exists" in second  # fresh: created once, then already there
    instances = [id(i) for c in conversations for i in c.backends.instances.values()]
    assert len(instances) == len(set(instances))
    assert set(vars(bfcl_executor)) == globals_before  # nothing cached in BFCL's module globals


# --- end to end over HTTP -------------------------------------------------------------------
def gold_server_answer(entries: Sequence[bfcl.BfclEntry]):
    """The model side of a scripted server: plays the gold calls of whichever entry the
    conversation's first user message belongs to."""
    by_opening = {e.question[0][0]["content"]: e for e in entries}

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        messages = request["messages"]
        entry = by_opening[next(m["content"] for m in messages if m["role"] == "user")]
        if messages[-1]["role"] != "user":
            return {"content": "Done."}
        turn = sum(m["role"] == "user" for m in messages) - 1
        calls = [bfcl.gold_tool_call(entry, text, f"t{turn}_{i}") for i, text in enumerate(entry.ground_truth[turn])]
        return {"content": None if calls else "I can't.", "tool_calls": calls or None}

    return answer


def test_a_category_end_to_end_against_a_scripted_openai_server() -> None:
    entries = bfcl.load_entries("miss_func", 3)
    with ScriptedOpenAI(gold_server_answer(entries)) as server:
        policy = OpenAICompatiblePolicy(server.url, "scripted-bfcl", temperature=0.0, max_retries=0)
        run = bfcl.evaluate(policy, ["miss_func"], limit=3)
    assert [(r.category, r.metric, r.value, r.entries, r.model) for r in run.results] == [
        ("miss_func", "accuracy", 1.0, 3, "openai:scripted-bfcl")]
    # one request per step: a call step and a closing text step per turn with calls, one per turn without
    expected = sum(2 if gt else 1 for e in entries for gt in e.ground_truth)
    assert server.count == expected
    assert all(r["tool_choice"] == "auto" for r in server.requests)
    for entry in entries:  # held-out functions are offered from their turn on, as in BFCL
        held_out = {d["name"] for docs in entry.held_out.values() for d in docs}
        mine = [r for r in server.requests if r["messages"][0]["content"] == entry.question[0][0]["content"]]
        offered = [{t["function"]["name"] for t in r["tools"]} for r in mine]
        assert mine[0]["tools"] == bfcl.openai_tools(entry.functions)
        assert held_out and not held_out & offered[0] and held_out <= offered[-1]
