"""Behaviour trees: the four phases, per domain, against the issue's acceptance bar."""

import dataclasses
import json
import random
import statistics

import pytest

from flywheel_assets.world.backtranslate import adversarial_instances, backtranslate_tree, make_adversarial
from flywheel_assets.world.behavior_tree import BehaviorTree, expand_tree, linear_tree, render_mermaid, render_text
from flywheel_assets.world.domains import DOMAINS, get_domain
from flywheel_assets.world.rollout import run_rollouts
from flywheel_assets.world.rubric import score
from flywheel_assets.world.synthesis import expected_path, seed_instances, task_for
from flywheel_assets.world.teacher import ScriptedTeacher

DOMAIN_NAMES = sorted(DOMAINS)


def _tasks(name, n=16, seed=21):
    return seed_instances([name], n, seed=seed, round_key="r000").tasks


def _follow(instance, path):
    """A policy that plays ``path`` on ``instance``'s world: calls count as done once tried."""
    steps = [dataclasses.replace(s, expect_error=True) if s.action == "call" else s for s in path]
    return run_rollouts([dataclasses.replace(instance, expected_path=steps)], ScriptedTeacher())[0]


def test_linear_tree_is_the_workflow_as_one_sequence():
    task = _tasks("retail", 4)[0]
    tree = linear_tree(task)
    assert tree.phase == "linear" and tree.root.kind == "sequence"
    assert [n.tool for n in tree.root.children if n.kind == "action"] == [s.tool for s in task.workflow]
    assert tree.stats() == {"depth": 2, "branches": 0, "paths": 1, "conditions": 0}


def test_tree_round_trips_and_renders():
    task = _tasks("retail", 4)[0]
    tree = expand_tree(linear_tree(task), task)
    again = BehaviorTree.from_dict(json.loads(json.dumps(tree.to_dict())))
    assert again.to_dict() == tree.to_dict()
    text, mermaid = render_text(tree), render_mermaid(tree)
    assert "selector" in text and "condition" in text
    assert mermaid.startswith("flowchart TD") and mermaid.count("-->") == sum(1 for _ in text.splitlines()) - 1


@pytest.mark.parametrize("name", DOMAIN_NAMES)
def test_expanded_trees_branch_at_least_twice_on_average(name):
    trees = [expand_tree(linear_tree(t), t) for t in _tasks(name, 24)]
    assert statistics.mean(t.stats()["branches"] for t in trees) >= 2.0
    assert all(t.stats()["paths"] == t.stats()["branches"] + 1 for t in trees)


@pytest.mark.parametrize("name", DOMAIN_NAMES)
def test_every_path_back_translates_to_an_instance_the_teacher_solves(name):
    instances, errors = [], []
    for task in _tasks(name):
        tree = expand_tree(linear_tree(task), task)
        branch = backtranslate_tree(tree, task, round_key="r000", errors=errors)
        assert len(branch) + sum(e["tree_id"] == tree.tree_id for e in errors) == len(tree.paths())
        instances += branch
    assert not errors, errors[:3]
    for strategy in ("ask_all_first", "just_in_time"):
        trajectories = run_rollouts(instances, ScriptedTeacher(strategy))
        failures = [(i.meta["path"], score(i, t).failed_items()) for i, t in zip(instances, trajectories)
                    if score(i, t).reward != 1.0]
        assert not failures, failures[:2]


@pytest.mark.parametrize("name", DOMAIN_NAMES)
def test_following_another_branch_of_the_same_tree_fails(name):
    checked = 0
    for task in _tasks(name, 8):
        tree = expand_tree(linear_tree(task), task)
        instances = backtranslate_tree(tree, task, round_key="r000")
        for a in instances:
            for b in instances:
                if a.meta["path"] == b.meta["path"]:
                    continue
                result = score(a, _follow(a, b.expected_path))
                assert not result.success and result.reward < 1.0, (a.meta["path"], b.meta["path"])
                happy = [not any(p.startswith("not ") for p in i.meta["path"]) for i in (a, b)]
                if any(happy):  # acting where one should refuse, or refusing where one should act
                    kinds = {i.kind for i in result.failed_items()}
                    assert kinds & {"prohibited", "subgoal"}, (a.meta["path"], b.meta["path"], kinds)
                checked += 1
    assert checked > 0


@pytest.mark.parametrize("name", DOMAIN_NAMES)
def test_adversarial_users_are_beaten_by_verifying_and_win_against_trust(name):
    instances = []
    for task in _tasks(name, 8):
        tree = expand_tree(linear_tree(task), task)
        instances += [make_adversarial(i) for i in backtranslate_tree(tree, task, round_key="r000")]
    assert {i.adversarial["strategy"] for i in instances} == {"false_claim", "skip_checks"}
    verified = run_rollouts(instances, ScriptedTeacher())
    assert all(score(i, t).reward == 1.0 for i, t in zip(instances, verified))
    domain = get_domain(name)
    for inst in instances:
        task = task_for(inst)
        happy, _ = expected_path(domain, task, list(inst.hidden_context))
        checks = {domain.condition(p[4:]).read_tool for p in inst.meta["path"] if p.startswith("not ")
                  and p != "not identity_verified"}
        trusting = [s for s in happy if s.tool not in domain.verification_tools and s.tool not in checks]
        result = score(inst, _follow(inst, trusting))
        assert result.reward == 0.0 and result.gate and result.gate.startswith("prohibited"), (inst.meta["path"],
                                                                                            result.gate)


def test_adversarial_share_and_determinism():
    def build():
        out = []
        for task in _tasks("retail", 8):
            tree = expand_tree(linear_tree(task), task)
            branched = backtranslate_tree(tree, task, round_key="r000", limit=2, rng=random.Random(task.seed))
            out += branched + adversarial_instances(branched, share=0.5, rng=random.Random(task.seed))
        return out

    first, second = build(), build()
    assert [i.to_json() for i in first] == [i.to_json() for i in second]
    adversarial = [i for i in first if i.phase == "adversarial"]
    assert 0 < len(adversarial) < len(first)
    assert all(i.parent_ids and i.instance_id not in i.parent_ids for i in adversarial)


def test_expansion_summary_verb_reports_every_domain(capsys):
    from flywheel_assets.cli import main

    assert main(["expansion", "--tasks-per-domain", "3", "--json"]) == 0
    rows = {r["domain"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(DOMAIN_NAMES) | {"all"}
    total = rows["all"]
    assert total["trees"] == 3 * len(DOMAIN_NAMES) and total["branched"] > 0
    assert total["generated"] == total["kept"] + total["dropped"] and total["failed"] > 0
