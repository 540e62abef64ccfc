"""Every domain pack: declared parts are complete, tasks are information-deficient, the
scripted teacher solves them, generation is deterministic."""

import json
import random

import jsonschema
import pytest

from flywheel_assets.world.domains import DOMAINS, banking, retail, telecom, travel
from flywheel_assets.world.rollout import run_rollouts
from flywheel_assets.world.rubric import score
from flywheel_assets.world.synthesis import placeholders, seed_instances
from flywheel_assets.world.teacher import STRATEGIES, ScriptedTeacher

DOMAIN_NAMES = sorted(DOMAINS)


@pytest.mark.parametrize("name", DOMAIN_NAMES)
def test_domain_declares_tools_policy_slots_and_templates(name):
    domain = DOMAINS[name]
    reads = [t for t in domain.tools if not t.spec.writes]
    writes = [t for t in domain.tools if t.spec.writes]
    assert len(domain.tools) >= 6 and len(reads) >= 2 and len(writes) >= 2
    for t in domain.tools:
        jsonschema.Draft202012Validator.check_schema(t.spec.parameters)
        assert t.spec.description
    assert all(domain.has_tool(v) for v in domain.verification_tools) and domain.verification_tools
    assert domain.has_tool(domain.transfer_tool)
    assert len(domain.policy.splitlines()) >= 4
    assert len(domain.templates) >= 4
    slot_names = {s.name for s in domain.slots}
    for template in domain.templates:
        assert len(template.phrasings) >= 3
        assert any(not (set(placeholders(p)) & slot_names) for p in template.phrasings), template.name


def _quoted(values):
    return [f'"{value}"' for value in values]


# What each policy document must state as the pack's tools enforce it: the document is prose
# (policies/<pack>.md), so a changed fee, limit or allowed value must be changed there too.
POLICY_FACTS = {
    "retail": _quoted(retail.CANCEL_REASONS),
    "telecom": [", ".join(map(str, sorted(telecom.TOPUP_PRICES)[:-1])) + f" or {max(telecom.TOPUP_PRICES)} GB",
                *telecom.SUSPEND_REASONS],
    "travel": [f"The current date is {travel.TODAY.isoformat()}.", *_quoted(travel.CANCEL_REASONS),
               f"a fee of ${travel.CANCEL_FEE_PER_PASSENGER:.0f} per passenger",
               "(" + ", ".join(f"{cabin} {travel.FREE_BAGS[cabin]}" for cabin in travel.CABINS) + ")",
               "(" + ", ".join(f"{tier} {n} more" for tier, n in travel.TIER_BAGS.items() if n) + ")",
               f"costs ${travel.BAG_FEE:.0f}; at most {travel.MAX_BAGS_PER_PASSENGER} checked bags per passenger",
               f"insurance costs ${travel.INSURANCE_PER_PASSENGER:.0f} per passenger"],
    "banking": ["(" + ", ".join(f"{tier} {limit:.0f}" for tier, limit in banking.DAILY_LIMITS.items()) + ")",
                *_quoted(banking.REPLACE_REASONS), *_quoted(banking.DISPUTE_REASONS)],
}


@pytest.mark.parametrize("name", DOMAIN_NAMES)
def test_policy_document_states_the_values_the_tools_enforce(name):
    policy = DOMAINS[name].policy
    assert not policy.endswith("\n") and policy.startswith("- ")  # the file's final newline is not policy
    flowing = " ".join(policy.split())  # the document wraps its lines anywhere
    missing = [fact for fact in POLICY_FACTS[name] if fact not in flowing]
    assert not missing, f"policies/{name}.md does not state {missing}"


@pytest.mark.parametrize("name", DOMAIN_NAMES)
def test_world_generator_is_deterministic_and_sized(name):
    domain = DOMAINS[name]
    a = domain.generate_world(random.Random("w1"))
    b = domain.generate_world(random.Random("w1"))
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert sum(len(rows) for rows in a.values()) >= 24  # dozens of entities


@pytest.mark.parametrize("name", DOMAIN_NAMES)
def test_instances_are_information_deficient(name):
    batch = seed_instances([name], 40, seed=3, round_key="r000")
    assert {i.task_type for i in batch.instances} == {t.name for t in DOMAINS[name].templates}
    for inst in batch.instances:
        assert inst.hidden_context, inst.instruction
        for value in inst.hidden_context.values():
            assert str(value) not in inst.instruction


@pytest.mark.parametrize("name", DOMAIN_NAMES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_scripted_teacher_solves_domain(name, strategy):
    batch = seed_instances([name], 80, seed=11, round_key="r000")
    trajectories = run_rollouts(batch.instances, ScriptedTeacher(strategy))
    scores = [score(i, t) for i, t in zip(batch.instances, trajectories)]
    solved = sum(s.reward == 1.0 and s.success for s in scores)
    failures = [(s.instance_id, s.gate, [(i.item_id, i.detail) for i in s.failed_items()])
                for s in scores if not s.success][:3]
    assert solved / len(scores) >= 0.99, failures


@pytest.mark.parametrize("name", DOMAIN_NAMES)
def test_same_seed_gives_identical_instances_and_trajectories(name):
    runs = []
    for _ in range(2):
        batch = seed_instances([name], 12, seed=5, round_key="r000")
        trajs = run_rollouts(batch.instances, ScriptedTeacher())
        runs.append(json.dumps([i.to_dict() for i in batch.instances] + [t.to_dict() for t in trajs]))
    assert runs[0] == runs[1]
