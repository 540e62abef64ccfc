"""The LLM judge (after predicate scoring, both verdicts recorded, an unreadable verdict a
flagged judge failure) and the LLM task writer (a draft must leave a required value to the
hidden user context), against the scripted server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from support.llm_server import Reply, ScriptedServer, completion, world_responder

from flywheel_assets.world.llm.client import EndpointConfig, LLMClient
from flywheel_assets.world.llm.judge import JUDGED_CHECKS, LLMJudge, judge_score, judge_scores
from flywheel_assets.world.llm.roles import build_world_roles
from flywheel_assets.world_roles import WorldSettings
from flywheel_assets.world.llm.writer import LLMTaskWriter, check_draft
from flywheel_assets.world.rollout import run_rollouts
from flywheel_assets.world.rubric import score
from flywheel_assets.world.synthesis import seed_instances
from flywheel_assets.world.teacher import ScriptedTeacher


@pytest.fixture(scope="module")
def batch():
    return seed_instances(["retail"], 4, seed=0, round_key="r000")


@pytest.fixture(scope="module")
def played(batch):
    trajectories = run_rollouts(batch.instances, ScriptedTeacher())
    return trajectories, [score(i, t) for i, t in zip(batch.instances, trajectories)]


@pytest.fixture
def server_with() -> Iterator[Any]:
    servers: list[ScriptedServer] = []

    def make(overrides: dict[str, Any]) -> ScriptedServer:
        servers.append(ScriptedServer(world_responder(overrides)))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def client(url: str, role: str) -> LLMClient:
    return LLMClient(EndpointConfig(role=role, base_url=url, model="sim", max_retries=0), round_key="r001")


def test_the_judge_records_both_verdicts_and_its_own_counts(server_with, batch, played):
    server = server_with({"judge": lambda n, body: completion(json.dumps({"met": False, "reason": "wrong value"}))})
    trajectories, scores = played
    judge = LLMJudge(client(server.url, "judge"))
    judged = judge_scores(batch.instances, trajectories, scores, judge)
    assert server.bodies[0]["response_format"]["type"] == "json_schema"
    for inst, before, after in zip(batch.instances, scores, judged):
        kinds = {i.item_id: i.check["type"] for i in inst.rubric.items}
        assert before.success  # the teacher meets every predicate
        for item in after.items:
            if kinds[item.item_id] in JUDGED_CHECKS:
                assert item.predicate_met is True and item.judge_met is False and not item.met
                assert item.judge_detail == "wrong value"
            else:
                assert item.predicate_met is None and item.met
        assert not after.success and after.reward < before.reward and after.failed_by is None


def test_an_agreeing_judge_changes_nothing(server_with, batch, played):
    server = server_with({})
    trajectories, scores = played
    judged = [judge_score(i, t, s, LLMJudge(client(server.url, "judge")))
              for i, t, s in zip(batch.instances, trajectories, scores)]
    assert [(s.reward, s.success, s.gate) for s in judged] == [(s.reward, s.success, s.gate) for s in scores]


def test_an_unreadable_verdict_is_a_flagged_judge_failure_not_a_zero(server_with, batch, played):
    server = server_with({"judge": lambda n, body: completion("yes, I think so")})
    trajectories, scores = played
    inst, trajectory, before = batch.instances[0], trajectories[0], scores[0]
    after = judge_score(inst, trajectory, before, LLMJudge(client(server.url, "judge"), output_retries=1))
    failed = [i for i in after.items if i.judge_failed]
    assert failed and all(i.judge_met is None and "judge failure" in i.judge_detail for i in failed)
    assert after.failed_by == "judge"
    assert after.reward == 1.0  # the other items are all met; the unjudged one counts for nothing
    assert server.hits == 2 * len(failed)  # one retry each


def test_the_writer_leaves_a_required_value_to_the_user(server_with, batch):
    server = server_with({})
    writer = LLMTaskWriter(client(server.url, "writer"))
    task = batch.tasks[0]
    instance, draft = writer.rewrite(task, round_key="r001", persona="polite")
    assert draft.accepted and instance is not None
    assert instance.instruction == draft.persona_phrasing and draft.hidden
    for name in draft.hidden:
        assert instance.hidden_context[name] == task.context[name]
        assert str(task.context[name]).lower() not in instance.instruction.lower()
    assert any(i.item_id.startswith("interaction:asked:") for i in instance.rubric.items)


def test_a_draft_that_states_every_required_value_is_rejected_with_the_reason(server_with, batch):
    task = batch.tasks[0]
    everything = " ".join(str(task.context[s]) for s in task.required_slots)

    def blabbing(n: int, body: dict[str, Any]) -> Reply:
        return completion(json.dumps({"instruction": f"Please: {everything}", "persona_phrasing": "Hi!"}))

    server = server_with({"writer": blabbing})
    instance, draft = LLMTaskWriter(client(server.url, "writer")).rewrite(task, round_key="r001")
    assert instance is None and not draft.accepted and "states every required value" in draft.reason
    assert check_draft(task, "Please help me with my order.", "Help!")[2] == ""


def test_a_writer_answer_that_is_not_the_json_asked_for_is_rejected(server_with, batch):
    server = server_with({"writer": lambda n, body: completion("Sure! Here's an instruction.")})
    instance, draft = LLMTaskWriter(client(server.url, "writer"), output_retries=1).rewrite(batch.tasks[0],
                                                                                             round_key="r001")
    assert instance is None and "not a JSON object" in draft.reason and server.hits == 2


def test_endpoint_configs_come_from_the_environment_per_role():
    env = {"FLYWHEEL_WORLD": "llm", "FLYWHEEL_LLM_ROLES": "user,tool,judge", "FLYWHEEL_LLM_BASE_URL": "http://h/v1",
           "FLYWHEEL_LLM_MODEL": "big", "FLYWHEEL_LLM_API_KEY_ENV": "K", "FLYWHEEL_JUDGE_MODEL": "grader",
           "FLYWHEEL_TOOL_BASE_URL": "http://t/v1", "FLYWHEEL_LLM_TIMEOUT_S": "7"}
    configs = WorldSettings.from_env(env).endpoint_configs()
    assert configs["judge"].model == "grader" and configs["judge"].base_url == "http://h/v1"
    assert configs["tool"].base_url == "http://t/v1" and configs["tool"].model == "big"
    assert all(c.api_key_env == "K" and c.timeout == 7.0 for c in configs.values())
    assert configs["user"].temperature > 0 and configs["tool"].temperature == 0
    assert set(configs) == {"user", "tool", "judge"}
    assert WorldSettings.from_env({}).endpoint_configs() == {}  # the procedural world plays no LLM role
    with pytest.raises(ValueError, match="FLYWHEEL_LLM_BASE_URL"):
        WorldSettings.from_env({"FLYWHEEL_WORLD": "llm"}).endpoint_configs()
    roles = build_world_roles({"judge": configs["judge"]}, cache=None, round_key="r001")
    assert roles.judge is not None and roles.user_factory is None and roles.backend_for is None
