"""Domain files: the shipped examples load and run; every kind of bad file is refused with
a message naming the file, the place in the document and what is wrong."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from flywheel_assets.cli_domain import main as domain_cli
from flywheel_assets.world.domain_file_backend import DomainFileToolBackend
from flywheel_assets.world.domain_files import DomainFileError, load_domain_file, summary
from flywheel_assets.world.tools import TaskToolCache, ToolResult

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "domains"
INSURANCE = EXAMPLES / "insurance_claims.yaml"


def insurance() -> dict[str, Any]:
    return yaml.safe_load(INSURANCE.read_text())


def tool_index(document: dict[str, Any], name: str) -> int:
    return next(i for i, t in enumerate(document["tools"]) if t["name"] == name)


def write(tmp_path: Path, document: Any, name: str = "domain.yaml") -> Path:
    """Beside the example's hooks module, so the hooks still resolve."""
    (tmp_path / "insurance_claims_hooks.py").write_text((EXAMPLES / "insurance_claims_hooks.py").read_text())
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document, sort_keys=False) if not isinstance(document, str) else document)
    return path


def problems_of(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(DomainFileError) as caught:
        load_domain_file(path)
    assert all(line.startswith(f"{path}: ") for line in str(caught.value).splitlines())
    return caught.value.problems


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_the_examples_load_and_mix_procedural_and_simulated_tools(example: Path):
    facts = summary(load_domain_file(example))
    assert 4 <= facts["tools"] <= 8
    assert facts["reads"] and facts["writes"] and facts["personas"] and facts["workflows"]
    assert facts["procedural"] and facts["llm_simulated"]
    assert all(count > 0 for count in facts["entities"].values())


def test_at_least_two_examples_unlike_the_built_in_domains():
    from flywheel_assets.world.domains import DOMAINS

    names = {load_domain_file(p).name for p in EXAMPLES.glob("*.yaml")}
    assert len(names - set(DOMAINS)) >= 2


def test_an_unknown_tool_in_a_workflow_is_named(tmp_path: Path):
    document = insurance()
    document["workflows"][0]["steps"][2]["tool"] = "file_a_claim"
    assert problems_of(write(tmp_path, document)) == [
        ("workflows[0].steps[2].tool", "unknown tool 'file_a_claim' (tools: add_claim_document, file_claim, "
                                       "get_claim, get_policy, verify_policyholder, withdraw_claim)")]


def test_a_parameters_schema_that_is_not_a_json_schema_names_the_keyword(tmp_path: Path):
    document = insurance()
    index = tool_index(document, "file_claim")
    document["tools"][index]["parameters"]["properties"]["amount"]["type"] = "money"
    [(where, what)] = problems_of(write(tmp_path, document))
    assert where == f"tools[{index}].parameters.properties.amount.type"
    assert what.startswith("not a JSON Schema: 'money' is not valid")


def test_parameters_must_be_an_object_schema(tmp_path: Path):
    document = insurance()
    document["tools"][0]["parameters"] = {"type": "string"}
    assert ("tools[0].parameters.type", 'a tool\'s parameters must be an object schema ("type": "object")'
            ) in problems_of(write(tmp_path, document))


def test_a_write_tool_with_no_way_to_change_state_is_refused(tmp_path: Path):
    document = insurance()
    index = tool_index(document, "add_claim_document")
    del document["tools"][index]["changes"]
    [(where, what)] = problems_of(write(tmp_path, document))
    assert where == f"tools[{index}]"
    assert "write tool 'add_claim_document' has no way to change the world" in what


def test_changes_must_name_a_declared_collection_and_reads_change_nothing(tmp_path: Path):
    document = insurance()
    write_index = tool_index(document, "add_claim_document")
    document["tools"][write_index]["changes"] = {"claimz": "appends a document"}
    document["tools"][0]["changes"] = {"claims": "nothing really"}
    assert problems_of(write(tmp_path, document)) == [
        ("tools[0].changes", "read tool 'verify_policyholder' cannot change the world; mark it access: write"),
        (f"tools[{write_index}].changes.claimz",
         "unknown entity collection 'claimz' (declared: claims, policies, policyholders)")]


def test_duplicate_tool_names_name_both_places(tmp_path: Path):
    document = insurance()
    document["tools"].append(copy.deepcopy(document["tools"][1]))
    last = len(document["tools"]) - 1
    assert problems_of(write(tmp_path, document)) == [
        (f"tools[{last}].name", "duplicate tool name 'get_policy' (first at tools[1])")]


def test_a_duplicate_yaml_key_is_refused_with_its_line(tmp_path: Path):
    text = INSURANCE.read_text().replace("  policyholders:\n    PH1001:", "  policyholders:\n    PH1002: {}\n    PH1001:")
    [(where, what)] = problems_of(write(tmp_path, text))
    assert where.startswith("line ") and "duplicate key 'PH1002'" in what


@pytest.mark.parametrize("implementation, message", [
    ("no_such_hooks:file_claim", "cannot import module 'no_such_hooks'"),
    ("insurance_claims_hooks:no_such_function", "module 'insurance_claims_hooks' has no function 'no_such_function'"),
    ("insurance_claims_hooks:OPEN_CLAIM", "insurance_claims_hooks:OPEN_CLAIM is not a function"),
])
def test_python_hooks_that_do_not_resolve_are_named(tmp_path: Path, implementation: str, message: str):
    document = insurance()
    index = tool_index(document, "file_claim")
    document["tools"][index]["implementation"] = implementation
    [(where, what)] = problems_of(write(tmp_path, document))
    assert where == f"tools[{index}].implementation" and what.startswith(message)


def test_a_hook_module_that_fails_to_import_says_why(tmp_path: Path):
    (tmp_path / "broken_hooks.py").write_text("raise RuntimeError('needs a licence key')\n")
    document = insurance()
    document["tools"][1]["implementation"] = "broken_hooks:get_policy"
    assert problems_of(write(tmp_path, document)) == [
        ("tools[1].implementation", "importing 'broken_hooks' failed: RuntimeError: needs a licence key")]


def test_seed_records_are_checked_against_their_entity_schema(tmp_path: Path):
    document = insurance()
    document["records"]["policies"]["POL2001"]["coverage_limit"] = "a lot"
    document["records"]["vehicles"] = {"V1": {"plate": "X"}}
    assert problems_of(write(tmp_path, document)) == [
        ("records.policies.POL2001.coverage_limit", "'a lot' is not of type 'number'"),
        ("records.vehicles", "no entity collection 'vehicles' is declared (entities: claims, policies, policyholders)")]


def test_field_errors_carry_their_path_and_an_openai_wrapper_gets_a_hint(tmp_path: Path):
    document = insurance()
    document["tools"][2]["access"] = "readwrite"
    document["tools"][3]["colour"] = "blue"
    del document["policy"]
    problems = dict(problems_of(write(tmp_path, document)))
    assert problems["tools[2].access"] == "Input should be 'read' or 'write'"
    assert problems["tools[3].colour"] == "unknown field"
    assert problems["policy"] == "required field is missing"
    wrapped = insurance()
    wrapped["tools"][0] = {"type": "function", "function": {"name": "x", "parameters": {"type": "object"}}}
    [(where, what)] = problems_of(write(tmp_path, wrapped))
    assert where == "tools[0]" and "directly under the tool" in what


def test_a_json_domain_file_loads_like_yaml(tmp_path: Path):
    path = write(tmp_path, "", name="domain.json")
    path.write_text(json.dumps(insurance()))
    assert summary(load_domain_file(path))["tools"] == summary(load_domain_file(INSURANCE))["tools"]


def test_domain_check_exits_2_with_one_line_per_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    document = insurance()
    document["workflows"][1]["steps"][0] = "verify_user"
    document["tools"].append(copy.deepcopy(document["tools"][0]))
    path = write(tmp_path, document)
    assert domain_cli(["domain", "check", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == f"{path}: tools[6].name: duplicate tool name 'verify_policyholder' (first at tools[0])"
    assert lines[1].startswith(f"{path}: workflows[1].steps[0].tool: unknown tool 'verify_user'")
    assert lines[2] == f"flywheel domain check: 2 problem(s) in {path}"
    assert domain_cli(["domain", "check", str(INSURANCE), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "insurance_claims"
    assert domain_cli(["domain", "check", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_the_backend_runs_hooks_exactly_and_writes_reach_later_reads():
    domain_file = load_domain_file(INSURANCE)
    session = TaskToolCache(DomainFileToolBackend(domain_file), domain_file.world()).session()
    filed = session.call("file_claim", {"policy_id": "POL2001", "incident_date": "2026-06-01", "amount": 1200.5,
                                        "description": "hail on the roof"})
    assert filed.ok and filed.wrote
    claim_id = json.loads(filed.content)["claim_id"]
    assert json.loads(session.call("get_claim", {"claim_id": claim_id}).content)["status"] == "submitted"
    withdrawn = session.call("withdraw_claim", {"claim_id": claim_id, "reason": "paid it myself"})
    assert json.loads(withdrawn.content)["status"] == "withdrawn"
    again = session.call("withdraw_claim", {"claim_id": claim_id, "reason": "twice"})
    assert not again.ok and again.failure is None and "cannot be withdrawn" in again.content
    assert session.world["claims"][claim_id]["withdrawal_reason"] == "paid it myself"


def test_the_backend_refuses_bad_calls_without_touching_the_world():
    domain_file = load_domain_file(INSURANCE)
    backend = DomainFileToolBackend(domain_file)
    world = domain_file.world()
    before = copy.deepcopy(world)
    lapsed = backend.call(world, "file_claim", {"policy_id": "POL2002", "incident_date": "2026-06-01",
                                                "amount": 10.5, "description": "x"})
    assert lapsed.content == "Error: policy POL2002 is lapsed, not active" and lapsed.failure is None
    assert backend.call(world, "file_claim", {"policy_id": "POL2001"}).content.startswith("Error: invalid arguments")
    assert backend.call(world, "no_such_tool", {}).content == "Error: unknown tool 'no_such_tool'"
    assert world == before


def test_tools_without_hooks_need_an_llm_backend_and_go_to_the_fallback():
    domain_file = load_domain_file(INSURANCE)
    args = {"claim_id": "CL3001", "document_type": "photo"}
    alone = DomainFileToolBackend(domain_file).call(domain_file.world(), "add_claim_document", args)
    assert not alone.ok and alone.failure == "tool" and "an LLM tool backend is needed" in alone.content

    class Simulator:
        calls: list[str] = []

        def call(self, world, name, arguments):
            self.calls.append(name)
            world["claims"]["CL3001"]["documents"].append({"document_type": arguments["document_type"]})
            return ToolResult(content='{"documents": 1}', ok=True, wrote=True)

    world = domain_file.world()
    simulated = DomainFileToolBackend(domain_file, fallback=Simulator()).call(world, "add_claim_document", args)
    assert simulated.wrote and Simulator.calls == ["add_claim_document"]
    assert world["claims"]["CL3001"]["documents"] == [{"document_type": "photo"}]


def test_a_read_hook_that_changes_the_world_is_the_files_fault(tmp_path: Path):
    (tmp_path / "sneaky.py").write_text("def get_policy(world, args):\n    world['policies'].clear()\n    return {}\n")
    document = insurance()
    document["tools"][1]["implementation"] = "sneaky:get_policy"
    domain_file = load_domain_file(write(tmp_path, document))
    world = domain_file.world()
    result = DomainFileToolBackend(domain_file).call(world, "get_policy", {"policy_id": "POL2001"})
    assert result.failure == "tool" and "changed the world" in result.content
    assert world["policies"]


def test_the_engine_domain_of_a_file_has_its_tools_prompt_and_world():
    from flywheel_assets.world.domain_files import simulated_by
    from flywheel_assets.world.domains.base import SimulatorFailure, ToolError
    from flywheel_assets.world.tools import ProceduralToolBackend, ToolResult

    domain_file = load_domain_file(EXAMPLES / "it_helpdesk.yaml")
    domain = domain_file.to_domain()
    assert [s.name for s in domain.tool_specs] == [t.name for t in domain_file.tools] + ["transfer_to_human_agents"]
    assert domain.write_tools == set(summary(domain_file)["writes"])
    assert "Northwind Logistics" in domain.system_prompt() and domain_file.policy in domain.system_prompt()
    assert domain.generate_world(None) == domain_file.records
    world = domain_file.world()
    assert domain.tool("find_employee").fn(world, {"email": "priya.nair@northwind.example"})["employee_id"] == "E5101"
    # a tool without an implementation is the tool side's failure until an LLM simulates it
    with pytest.raises(SimulatorFailure, match="no LLM tool simulates it"):
        domain.tool("reset_password").fn(world, {"employee_id": "E5101"})
    assert ProceduralToolBackend(domain).call(world, "reset_password", {"employee_id": "E5101"}).failure == "tool"

    class Simulator:
        def call(self, world, name, arguments):
            return ToolResult('{"reset": true}', ok=True) if arguments["employee_id"] == "E5101" else \
                ToolResult("Error: no such employee", ok=False)

    with simulated_by("it_helpdesk", Simulator()):
        assert domain.tool("reset_password").fn(world, {"employee_id": "E5101"}) == {"reset": True}
        with pytest.raises(ToolError, match="^no such employee$"):
            domain.tool("reset_password").fn(world, {"employee_id": "E9999"})
    with pytest.raises(SimulatorFailure):
        domain.tool("reset_password").fn(world, {"employee_id": "E5101"})
