"""The LLM world and task writer against a scripted server: a good answer becomes a TaskSpec
that replays and traces every argument to its source; each kind of bad answer is rejected
with its place named; a bad condition is dropped while the task is kept; a retry sends a
new request; a tool without a Python hook is replayed through the LLM tool backend."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.llm_server import Reply, ScriptedServer, completion

from flywheel_assets.world.domain_file_backend import DomainFileToolBackend
from flywheel_assets.world.domain_files import DomainFile, load_domain_file
from flywheel_assets.world.llm.client import EndpointConfig, LLMClient
from flywheel_assets.world.llm.tool import LLMToolBackend
from flywheel_assets.world.llm.world_writer import WORLD_WRITER_SYSTEM, LLMWorldWriter, WrittenTask, world_writer_prompt
from flywheel_assets.world.synthesis import information_deficient, resolve
from flywheel_assets.world.tasks import ArgSource, TaskSpec

INSURANCE = Path(__file__).resolve().parents[1] / "examples" / "domains" / "insurance_claims.yaml"


@pytest.fixture(scope="module")
def claims() -> DomainFile:
    return load_domain_file(INSURANCE)


def good_answer() -> dict[str, Any]:
    """Maria withdraws a duplicate claim the writer adds to the world."""
    return {
        "goal": "Maria Lopez withdraws claim CL3009 on her home policy because it is a duplicate claim.",
        "request": "I filed the same claim twice and want to withdraw one of them.",
        "facts": {"email": "maria.lopez@example.com", "date_of_birth": "1984-03-17", "claim_id": "CL3009"},
        "fact_phrases": {"claim_id": "claim number"},
        "records": {"claims": {"CL3009": {"policy_id": "POL2001", "status": "submitted",
                                          "incident_date": "2026-05-04", "amount": 1830.45,
                                          "description": "water damage in the kitchen", "documents": []}}},
        "workflow": [
            {"tool": "verify_policyholder", "arguments": {"email": "maria.lopez@example.com",
                                                          "date_of_birth": "1984-03-17"},
             "output": {"policyholder_id": "PH1001", "policies": ["POL2001", "POL2002"]}, "purpose": "who she is"},
            {"tool": "get_claim", "arguments": {"claim_id": "CL3009"},
             "output": {"status": "submitted", "policy_id": "POL2001", "amount": 1830.4500000001}},
            {"tool": "get_policy", "arguments": {"policy_id": "POL2001"}, "output": {"holder_id": "PH1001"}},
            {"tool": "withdraw_claim", "arguments": {"claim_id": "CL3009", "reason": "duplicate claim"},
             "output": {"status": "withdrawn"}},
        ],
        "outcome": [{"step": 3, "field": "status"}],
        "conditions": [
            {"name": "claim_is_open", "description": "the claim is still open", "guards": ["withdraw_claim"],
             "read_tool": "get_claim", "field": ["status"], "allowed": ["submitted", "under_review"],
             "falsify": {"table": "claims", "key_argument": "claim_id", "field": "status", "value": "paid"},
             "claim": "My claim is definitely still open."},
            {"name": "policy_is_motor", "description": "the policy covers a car", "guards": ["withdraw_claim"],
             "read_tool": "get_policy", "field": "kind", "allowed": ["motor"],
             "falsify": {"table": "policies", "key_argument": "policy_id", "field": "kind", "value": "home"},
             "claim": "It is a motor policy."},
        ],
    }


def is_writer(body: dict[str, Any]) -> bool:
    return body["messages"][0]["content"] == WORLD_WRITER_SYSTEM


def simulated_add_document(body: dict[str, Any]) -> str:
    """The tool role for add_claim_document, answered as a faithful model would."""
    request = json.loads(body["messages"][1]["content"])
    arguments = request["call"]["arguments"]
    claim = request["world"]["claims"][arguments["claim_id"]]
    documents = claim.get("documents", []) + [{"document_type": arguments["document_type"],
                                               "note": arguments.get("note", "")}]
    return json.dumps({"observation": {"claim_id": arguments["claim_id"], "documents": documents}, "error": None,
                       "state_change": {"claims": {arguments["claim_id"]: {"documents": documents}}}})


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def make(*answers: dict[str, Any] | str) -> ScriptedServer:
        """Writer requests get ``answers`` in turn (the last one repeated); tool requests
        the simulated add_claim_document."""
        writer_calls: list[int] = []

        def respond(number: int, body: dict[str, Any]) -> Reply:
            if is_writer(body):
                writer_calls.append(number)
                answer = answers[min(len(writer_calls), len(answers)) - 1]
                return completion(answer if isinstance(answer, str) else json.dumps(answer))
            if body["messages"][0]["content"].startswith("You simulate the tool"):
                return completion(simulated_add_document(body))
            return 400, {"error": {"message": "unexpected request"}}

        servers.append(ScriptedServer(respond))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def client(url: str, role: str = "writer") -> LLMClient:
    return LLMClient(EndpointConfig(role=role, base_url=url, model="sim", max_retries=0), round_key="r001")


def write(server: ScriptedServer, domain_file: DomainFile, retries: int = 0, **kwargs: Any) -> WrittenTask:
    backend = kwargs.pop("backend", None) or DomainFileToolBackend(domain_file)
    return LLMWorldWriter(client(server.url), output_retries=retries).write_task(
        domain_file, seed=kwargs.pop("seed", "s0"), backend=backend, **kwargs)


def replay(task: TaskSpec, backend: DomainFileToolBackend) -> list[Any]:
    """``synthesis.execute_workflow`` over the domain file's backend."""
    state, outputs = copy.deepcopy(task.world), []
    for wf_step in task.workflow:
        args = {name: resolve(src, task.context, outputs) for name, src in wf_step.args.items()}
        result = backend.call(state, wf_step.tool, args)
        assert result.ok, result.content
        outputs.append(json.loads(result.content))
    return outputs


def test_a_good_answer_becomes_a_task_that_replays_with_its_sources(serve, claims):
    server = serve(good_answer())
    workflow = next(w for w in claims.workflows if w.name == "withdraw_open_claim")
    written = write(server, claims, workflow=workflow, persona="anxious")
    task = written.task
    assert task is not None and written.reason == ""
    steps = task.workflow
    assert steps[0].args["email"] == ArgSource("slot", slot="email")
    assert steps[1].args["claim_id"] == ArgSource("slot", slot="claim_id")
    assert steps[2].args["policy_id"] == ArgSource("step", step=1, path=["policy_id"])  # the nearest output
    assert steps[3].args["reason"] == ArgSource("const", value="duplicate claim")
    assert task.required_slots == ["email", "date_of_birth", "claim_id"]
    assert task.task_type == "withdraw_open_claim" and task.domain == "insurance_claims"
    assert task.world["claims"]["CL3009"]["status"] == "submitted"  # the world before the replay
    assert "CL3001" in task.world["claims"]  # the seed records stay
    outputs = replay(task, DomainFileToolBackend(claims))
    assert [resolve(src, task.context, outputs) for src in task.outcome] == ["withdrawn"]
    assert written.fact_phrases == {"claim_id": "claim number"}
    assert task.phrasings[0] == good_answer()["request"]
    assert "My claim number is {claim_id}." in task.phrasings[3]
    instruction, stated, hidden = information_deficient(task, random.Random(0))
    assert hidden and all(task.context[name] not in instruction for name in hidden)
    assert task.written_by == {"model": "sim", "request_hashes": written.request_hashes}
    assert len(written.request_hashes) == 1 and server.hits == 1
    prompt = server.bodies[0]["messages"][1]["content"]
    assert "withdraw_open_claim" in prompt and "Task seed" in prompt and "s0" in prompt
    assert "asks twice whether the claim will be paid" in prompt  # the persona's description
    assert TaskSpec.from_json(task.to_json()).to_json() == task.to_json()


def test_without_an_outcome_the_last_output_fields_the_model_wrote_come_first(serve, claims):
    answer = good_answer()
    del answer["outcome"]
    task = write(serve(answer), claims).task
    assert task is not None
    assert [src.path for src in task.outcome] == [["status"], ["amount"], ["description"]]  # claim_id is a fact


def test_the_prompt_gives_tools_entities_and_clipped_records(claims):
    big = claims.model_copy(deep=True)
    big.records = {"claims": {f"CL{n}": {**claims.records["claims"]["CL3001"], "description": "x" * 80}
                              for n in range(4000, 4200)}}
    prompt = world_writer_prompt(big, seed="s1", persona="terse")[1]["content"]
    assert len(prompt) < 20000 and "CL4000" in prompt and "CL4199" not in prompt
    assert "more not shown" in prompt
    assert '"access": "write"' in prompt and '"changes": {"claims"' in prompt  # add_claim_document's
    assert '"withdrawal_reason": {"type": "string"}' in prompt  # an entity schema
    assert "Answers in as few words as possible" in prompt and "(none: choose a task" in prompt


def test_a_condition_that_does_not_hold_is_dropped_and_the_task_kept(serve, claims):
    written = write(serve(good_answer()), claims)
    assert written.task is not None
    assert [c["name"] for c in written.task.conditions] == ["claim_is_open"]
    [dropped] = written.dropped_conditions
    assert dropped["name"] == "policy_is_motor"
    assert dropped["reason"].startswith("conditions[1]: the condition does not hold")


@pytest.mark.parametrize("change", ["read_after_guard", "no_record", "unknown_guard", "duplicate", "malformed"])
def test_each_bad_condition_is_dropped_with_its_reason(serve, claims, change):
    answer = good_answer()
    condition = answer["conditions"][0]
    answer["conditions"] = [condition]
    if change == "read_after_guard":
        condition["read_tool"], condition["field"], condition["allowed"] = "get_policy", "holder_id", ["PH1001"]
        answer["workflow"][2], answer["workflow"][3] = answer["workflow"][3], answer["workflow"][2]
        answer["outcome"] = [{"step": 2, "field": "status"}]
        expected = "read_tool 'get_policy' is not called before guard 'withdraw_claim'"
    elif change == "no_record":
        condition["falsify"]["table"] = "tickets"
        expected = "falsify: no record tickets['CL3009']"
    elif change == "unknown_guard":
        condition["guards"] = ["file_claim"]
        expected = "guards ['file_claim'] are not called in the workflow"
    elif change == "malformed":
        condition["guards"] = [{"tool": "withdraw_claim"}]
        expected = "guards must be tool names"
    else:
        answer["conditions"] = [condition, dict(condition)]
        expected = "duplicate condition name 'claim_is_open'"
    written = write(serve(answer), claims)
    assert written.task is not None
    [dropped] = written.dropped_conditions
    assert dropped["reason"].startswith(f"conditions[{len(answer['conditions']) - 1}]: {expected}")
    assert len(written.task.conditions) == len(answer["conditions"]) - 1


def mutate(path: str) -> tuple[dict[str, Any], str]:
    """A good answer with one fault, and the start of the reason it must be rejected with."""
    answer = good_answer()
    steps = answer["workflow"]
    if path == "unknown_tool":
        steps[1]["tool"] = "get_claims"
        return answer, "workflow[1].tool: unknown tool 'get_claims'"
    if path == "schema":
        steps[3]["arguments"]["reason"] = 7
        return answer, "workflow[3].arguments.reason: 7 is not of type 'string'"
    if path == "from_nowhere":
        steps[3]["arguments"]["reason"] = "moved house"
        return answer, "workflow[3].arguments.reason: comes from no fact, earlier output or the goal"
    if path == "disagrees":
        steps[1]["output"]["status"] = "under_review"
        return answer, 'workflow[1].output.status: wrote "under_review", the replay returned "submitted"'
    if path == "missing_output":
        steps[2]["output"]["deductible"] = 500
        return answer, "workflow[2].output.deductible: wrote 500, the replay returned no 'deductible'"
    if path == "failed_call":
        answer["records"]["claims"]["CL3009"]["status"] = "paid"
        steps[1]["output"] = {"policy_id": "POL2001"}
        return answer, "workflow[3] withdraw_claim: the call failed: Error: claim CL3009 is paid and cannot be"
    if path == "leak":
        answer["request"] = "Please withdraw claim cl3009, it is a duplicate."
        return answer, "request: states the fact claim_id"
    if path == "record_schema":
        answer["records"]["claims"]["CL3009"]["status"] = "open"
        return answer, "records.claims.CL3009.status: 'open' is not one of"
    if path == "unknown_collection":
        answer["records"]["tickets"] = {"T1": {}}
        return answer, "records.tickets: unknown collection"
    if path == "fact_name":
        answer["facts"]["Claim-ID"] = "CL3009"
        return answer, "facts.Claim-ID: a fact name must match"
    if path == "outcome":
        answer["outcome"] = [{"step": 3, "field": "payout"}]
        return answer, "outcome[0].field: no 'payout' in the read's output of workflow[3]"
    raise AssertionError(path)


def test_a_task_that_skips_the_hinted_workflow_is_rejected(serve, claims):
    answer = good_answer()
    del answer["workflow"][1]  # no get_claim
    answer["outcome"], answer["conditions"] = [], []
    workflow = next(w for w in claims.workflows if w.name == "withdraw_open_claim")
    written = write(serve(answer), claims, workflow=workflow)
    assert written.task is None
    assert written.reason == ("workflow: does not follow the workflow withdraw_open_claim "
                              "(verify_policyholder -> get_claim -> withdraw_claim)")


@pytest.mark.parametrize("fault", ["unknown_tool", "schema", "from_nowhere", "disagrees", "missing_output",
                                   "failed_call", "leak", "record_schema", "unknown_collection", "fact_name",
                                   "outcome"])
def test_each_fault_rejects_the_task_naming_the_place(serve, claims, fault):
    answer, reason = mutate(fault)
    written = write(serve(answer), claims)
    assert written.task is None
    assert written.reason.startswith(reason), written.reason
    assert len(written.request_hashes) == 1


def test_an_answer_that_is_not_json_is_rejected(serve, claims):
    written = write(serve("Here is a task: withdraw a claim."), claims)
    assert written.task is None and written.reason == "the answer is not a JSON object"


def test_a_retry_after_a_rejection_sends_a_new_request_and_succeeds(serve, claims):
    bad, reason = mutate("from_nowhere")
    server = serve(bad, good_answer())
    written = write(server, claims, retries=1)
    assert written.task is not None and written.reason == ""
    assert server.hits == 2 and len(set(written.request_hashes)) == 2
    retry = server.bodies[1]["messages"]
    assert retry[:2] == server.bodies[0]["messages"]
    assert retry[2] == {"role": "assistant", "content": json.dumps(bad)}
    assert retry[3]["content"].startswith(f"rejected: {reason}") and retry[3]["content"].endswith("answer again")
    assert written.task.written_by["request_hashes"] == written.request_hashes


def test_the_same_answers_give_the_same_task(serve, claims):
    first = write(serve(good_answer()), claims, seed="s7").task
    second = write(serve(good_answer()), claims, seed="s7").task
    other = write(serve(good_answer()), claims, seed="s8").task
    assert first is not None and second is not None and other is not None
    assert first.to_json() == second.to_json()
    assert other.task_id != first.task_id


def document_answer() -> dict[str, Any]:
    answer = good_answer()
    answer["goal"] = "Maria Lopez adds a photo of the kitchen floor to claim CL3009."
    answer["request"] = "I have a picture for my water damage claim."
    answer["workflow"] = answer["workflow"][:2] + [
        {"tool": "add_claim_document", "arguments": {"claim_id": "CL3009", "document_type": "photo",
                                                     "note": "kitchen floor"},
         "output": {"documents": [{"document_type": "photo", "note": "kitchen floor"}]}}]
    answer["outcome"], answer["conditions"] = [], []
    return answer


def test_a_tool_without_a_hook_is_replayed_through_the_llm_tool(serve, claims):
    server = serve(document_answer())
    backend = DomainFileToolBackend(claims, fallback=LLMToolBackend(claims.to_domain(), client(server.url, "tool")))
    written = write(server, claims, backend=backend)
    task = written.task
    assert task is not None, written.reason
    tool_requests = [b for b in server.bodies if b["messages"][0]["content"].startswith("You simulate the tool")]
    assert len(tool_requests) == 1 and "add_claim_document" in tool_requests[0]["messages"][0]["content"]
    earlier = json.loads(tool_requests[0]["messages"][1]["content"])["earlier_calls"]
    assert [c["name"] for c in earlier] == ["verify_policyholder", "get_claim"]  # the replay's history
    assert task.workflow[2].args["document_type"] == ArgSource("const", value="photo")
    assert task.outcome == []  # by default the last output's scalars that are no fact: here none
    assert task.world["claims"]["CL3009"]["documents"] == []


def test_a_simulated_tool_that_disagrees_or_is_missing_rejects_the_task(serve, claims):
    answer = document_answer()
    answer["workflow"][2]["output"] = {"documents": []}
    server = serve(answer)
    backend = DomainFileToolBackend(claims, fallback=LLMToolBackend(claims.to_domain(), client(server.url, "tool")))
    assert write(server, claims, backend=backend).reason.startswith("workflow[2].output.documents: wrote []")
    without = write(serve(document_answer()), claims)  # no LLM tool behind the hooks
    assert without.task is None
    assert without.reason.startswith("workflow[2] add_claim_document: the call failed: Error: tool "
                                     "add_claim_document has no Python implementation")
