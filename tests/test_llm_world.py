"""An LLM world against the scripted server: LLM mock user and LLM mock tool in the batched
rollout runner, the call cache across re-materialisations, concurrency, failure attribution,
and a hostile endpoint in each role."""

from __future__ import annotations

import json
from typing import Any

import pytest
from support.llm_server import Reply, completion, world_responder

from flywheel_assets.world.domains import get_domain
from flywheel_assets.world.llm.cache import InMemoryCallCache
from flywheel_assets.world.llm.client import EndpointConfig, EndpointError
from flywheel_assets.world.llm.roles import build_world_roles
from flywheel_assets.world.llm.tool import LLMToolBackend, apply_state_change
from flywheel_assets.world.rollout import make_caches, run_rollouts
from flywheel_assets.world.rubric import score
from flywheel_assets.world.synthesis import seed_instances
from flywheel_assets.world.teacher import ScriptedTeacher
from flywheel_assets.world.users import STOP

RETAIL = get_domain("retail")


@pytest.fixture(scope="module")
def instances():
    return seed_instances(["retail"], 6, seed=0, round_key="r000").instances


def configs(url: str, roles: tuple[str, ...] = ("user", "tool"), **kw: Any) -> dict[str, EndpointConfig]:
    settings = {"max_retries": 1, "backoff_s": 0.01, "timeout": 10.0, "concurrency": 16, **kw}
    return {role: EndpointConfig(role=role, base_url=url, model="sim", **settings) for role in roles}


def play(instances, url, cache, *, roles=("user", "tool"), samples=1, round_key="r001", **kw):
    world = build_world_roles(configs(url, roles, **kw), cache=cache, round_key=round_key, stage="rollouts")
    trajectories = run_rollouts(instances, ScriptedTeacher(), samples=samples, max_turns=14,
                                user_factory=world.user_factory, backend_for=world.backend_for)
    return trajectories, world


def test_the_teacher_solves_tasks_in_an_llm_world(serve, instances):
    server = serve(world_responder())
    trajectories, world = play(instances, server.url, InMemoryCallCache())
    results = [score(i, t) for i, t in zip(instances, trajectories)]
    assert all(r.success for r in results), [(r.instance_id, r.gate, [i.detail for i in r.failed_items()])
                                             for r in results if not r.success]
    assert all(t.failed_by is None and t.termination == "user_stop" for t in trajectories)
    roles = {r["role"] for r in world.call_rows()}
    assert roles == {"user", "tool"} and len(world.call_rows()) == server.hits
    figures = world.figures()
    assert figures["tool"]["calls"] > 0 and figures["tool"]["cache_hit_rate"] == 0.0
    assert figures["user"]["prompt_tokens"] == 10 * figures["user"]["calls"]


def test_a_second_materialisation_makes_no_endpoint_call(serve, instances):
    server = serve(world_responder())
    cache = InMemoryCallCache()
    first, _ = play(instances, server.url, cache, samples=2)
    made = server.hits
    again, world = play(instances, server.url, cache, samples=2)
    assert made > 0 and server.hits == made  # zero requests the second time, counted on the server
    assert [t.to_dict() for t in again] == [t.to_dict() for t in first]
    rows = world.call_rows()
    assert rows and all(r["cached"] for r in rows) and world.figures()["tool"]["cache_hit_rate"] == 1.0


def test_the_same_settings_make_the_same_requests(serve, instances):
    server = serve(world_responder())
    play(instances, server.url, InMemoryCallCache(), samples=2)
    first = sorted(json.dumps(b, sort_keys=True) for b in server.bodies)
    server.reset_counts()
    play(instances, server.url, InMemoryCallCache(), samples=2)
    assert sorted(json.dumps(b, sort_keys=True) for b in server.bodies) == first


def test_tool_calls_and_user_replies_of_a_turn_are_sent_concurrently(serve, instances):
    server = serve(world_responder(), latency_s=0.05)
    play(instances, server.url, None, concurrency=16)
    assert server.max_in_flight >= 4  # six episodes' calls of one phase overlap at the server
    sequential = serve(world_responder(), latency_s=0.01)
    play(instances, sequential.url, None, concurrency=1)
    assert sequential.max_in_flight == 1


def test_a_write_changes_what_later_reads_see(serve, instances):
    server = serve(world_responder())
    inst = next(i for i in instances if i.task_type == "cancel_order")
    cancel = next(s for s in inst.expected_path if s.action == "call" and s.tool == "cancel_pending_order")
    world = build_world_roles(configs(server.url, ("tool",)), cache=None, round_key="r001")
    cache = make_caches([inst], world.backend_for)[inst.instance_id]
    session = cache.session()
    read = {"order_id": cancel.args["order_id"]}
    assert json.loads(session.call("get_order_details", read).content)["status"] == "pending"
    assert session.call(cancel.tool, cancel.args).wrote
    assert session.world["orders"][cancel.args["order_id"]]["status"] == "cancelled"
    assert json.loads(session.call("get_order_details", read).content)["status"] == "cancelled"
    assert session.version != cache.initial_version
    other = cache.session()
    hits = server.hits
    other.call(cancel.tool, cancel.args)  # the same write in another episode: replayed from the cache
    assert server.hits == hits and other.world == session.world


def test_invalid_arguments_are_refused_before_any_model_sees_them(serve, instances):
    server = serve(world_responder())
    world = build_world_roles(configs(server.url, ("tool",)), cache=None, round_key="r001")
    session = make_caches(instances[:1], world.backend_for)[instances[0].instance_id].session()
    assert session.call("get_order_details", {"order_id": 7}).content.startswith("Error: invalid")
    assert session.call("no_such_tool", {}).content.startswith("Error: unknown tool")
    assert server.hits == 0


@pytest.mark.parametrize("change, problem", [
    ({"nope": {"x": {"a": 1}}}, "unknown table"),
    ({"orders": {"#W1": "cancelled"}}, "must be an object"),
    ({"orders": {"#W1": {}}}, "must be an object of field values"),
    ({"orders": {"#W1": {"status": 3}}}, "must stay a str"),
    ({"orders": {"#NEW": {"status": "x"}}}, "needs exactly the fields"),
])
def test_an_invalid_state_change_is_refused(change, problem):
    world = {"orders": {"#W1": {"order_id": "#W1", "status": "pending"}}}
    new_world, reason = apply_state_change(world, change)
    assert new_world is None and problem in reason
    assert apply_state_change(world, {"orders": {"#W1": {"status": "cancelled"}}})[0]["orders"]["#W1"]["status"] \
        == "cancelled" and world["orders"]["#W1"]["status"] == "pending"


def _tool_garbage(n: int, body: dict[str, Any]) -> Reply:
    return completion("I think the order is fine")  # not JSON: unusable every time


def test_a_tool_simulator_that_never_answers_usably_ends_the_episode_blamed_on_it(serve, instances):
    server = serve(world_responder({"tool": _tool_garbage}))
    trajectories, world = play(instances[:2], server.url, InMemoryCallCache())
    for t in trajectories:
        assert t.failed_by == "tool" and t.termination == "simulator_failure"
        assert "tool simulator failed" in t.messages[-1]["content"]
    tool_rows = [r for r in world.call_rows() if r["role"] == "tool"]
    assert len(tool_rows) == 2 * 3  # the first call of each episode, asked three times (two retries)


def test_a_bad_state_change_is_retried_and_the_fixed_answer_used(serve, instances):
    asked: dict[str, int] = {}

    def first_bad(n: int, body: dict[str, Any]) -> Reply | None:
        call = json.loads(body["messages"][1]["content"])["call"]
        key = json.dumps(call, sort_keys=True)
        asked[key] = asked.get(key, 0) + 1
        if call["name"] == "cancel_pending_order" and asked[key] == 1:
            return completion(json.dumps({"observation": {"ok": True}, "state_change": {"orders": {"x": 1}}}))
        return None

    server = serve(world_responder({"tool": first_bad}))
    inst = [i for i in instances if i.task_type == "cancel_order"]
    trajectories, _ = play(inst, server.url, None)
    assert all(score(i, t).success for i, t in zip(inst, trajectories))
    assert any(v == 2 for k, v in asked.items() if "cancel_pending_order" in k)


def test_a_user_simulator_that_answers_nothing_ends_the_episode_blamed_on_it(serve, instances):
    server = serve(world_responder({"user": lambda n, body: completion("   ")}))
    trajectories, world = play(instances[:2], server.url, None)
    for t in trajectories:
        assert t.failed_by == "user" and t.termination == "simulator_failure" and t.messages[-1]["role"] == "assistant"
        assert t.user_log["failure"].startswith("the user simulator gave no usable message")
    assert world.figures()["user"]["calls"] == 2 * 3


def test_a_stop_before_any_outcome_is_asked_again(serve, instances):
    premature: list[int] = []

    def eager(n: int, body: dict[str, Any]) -> Reply | None:
        said_anything_final = any(m["role"] == "user" and "?" not in (m["content"] or "")
                                  for m in body["messages"][1:])
        if not said_anything_final and not premature:
            premature.append(n)
            return completion(f"Never mind. {STOP}")
        return None

    server = serve(world_responder({"user": eager}))
    trajectories, _ = play(instances[:1], server.url, None)
    [t] = trajectories
    assert premature and t.user_log["premature_stops"] == 1
    assert score(instances[0], t).success and t.termination == "user_stop"
    assert all(STOP not in (m["content"] or "") for m in t.messages[:-1] if m["role"] == "user")


@pytest.mark.parametrize("role", ["user", "tool"])
@pytest.mark.parametrize("hostile", [(502, {"error": {"message": "bad gateway"}}), (200, b"<html>oops</html>"),
                                     (200, {"choices": []})])
def test_a_hostile_endpoint_in_a_role_fails_the_round_naming_role_and_round(serve, instances, role, hostile):
    server = serve(world_responder({role: lambda n, body: hostile}))
    with pytest.raises(EndpointError) as err:
        play(instances[:3], server.url, None, round_key="r042")
    message = str(err.value)
    assert f"{role} endpoint" in message and "round r042" in message and "sim" in message
    assert sum(1 for b in server.bodies if b["messages"][0]["content"].startswith(
        "You are role-playing" if role == "user" else "You simulate")) <= 3 * 2  # bounded: 2 tries per call


def test_mixed_world_procedural_tools_with_an_llm_user(serve, instances):
    server = serve(world_responder())
    trajectories, world = play(instances, server.url, None, roles=("user",))
    assert all(score(i, t).success for i, t in zip(instances, trajectories))
    assert {r["role"] for r in world.call_rows()} == {"user"}


def test_the_tool_prompt_holds_schema_world_history_and_call(serve, instances):
    server = serve(world_responder())
    world = build_world_roles(configs(server.url, ("tool",)), cache=None, round_key="r001")
    inst = instances[0]
    backend = world.backend_for(RETAIL)
    assert isinstance(backend, LLMToolBackend)
    session = make_caches([inst], world.backend_for)[inst.instance_id].session()
    email = inst.hidden_context.get("email") or next(iter(inst.initial_world["users"].values()))["email"]
    session.call("find_user_id_by_email", {"email": email})
    session.call("find_user_id_by_email", {"email": "nobody@example.com"})
    request = json.loads(server.bodies[-1]["messages"][1]["content"])
    assert request["tool"]["name"] == "find_user_id_by_email" and "parameters" in request["tool"]
    assert request["call"] == {"name": "find_user_id_by_email", "arguments": {"email": "nobody@example.com"}}
    assert request["earlier_calls"][0]["arguments"] == {"email": email}
    assert "world" in request and server.bodies[-1]["response_format"] == {"type": "json_object"}


def test_an_agent_that_runs_out_of_turns_is_blamed(instances):
    class Dawdler:
        name = "dawdler"

        def generate(self, requests):
            return [{"role": "assistant", "content": "Could you tell me your favourite colour?"} for _ in requests]

    trajectories = run_rollouts(instances[:2], Dawdler(), max_turns=3)
    assert all(t.termination == "max_turns" and t.failed_by == "agent" for t in trajectories)
    solved = run_rollouts(instances[:2], ScriptedTeacher())
    assert all(t.failed_by is None for t in solved)


def test_the_user_prompt_holds_persona_facts_strategy_and_no_tool_traffic(serve, instances):
    import dataclasses

    server = serve(world_responder())
    inst = dataclasses.replace(instances[0], persona="terse",
                               adversarial={"claim": "I was promised a full refund.",
                                            "escalations": ["My friend got one.", "I want a manager."]})
    world = build_world_roles(configs(server.url, ("user",)), cache=None, round_key="r001")
    user = world.user_factory(inst, RETAIL)
    conversation = [{"role": "system", "content": "agent rules"}, {"role": "user", "content": user.opening()},
                    {"role": "assistant", "content": None, "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "get_order_details",
                                                                     "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "c1", "content": "SECRET-TOOL-OUTPUT"},
                    {"role": "assistant", "content": "Could you tell me your email?"}]
    reply = user.respond("Could you tell me your email?", conversation)
    system, *history = server.bodies[-1]["messages"]
    assert "as few words as possible" in system["content"] and "I was promised a full refund." in system["content"]
    assert "My friend got one. | I want a manager." in system["content"] and STOP in system["content"]
    email = inst.hidden_context["email"]
    assert f"your email: {email}" in system["content"]
    assert history == [{"role": "assistant", "content": user.opening()},
                       {"role": "user", "content": "Could you tell me your email?"}]
    assert "SECRET-TOOL-OUTPUT" not in json.dumps(server.bodies[-1])
    assert email in reply and user.log()["revealed"] == {"email": 1}
