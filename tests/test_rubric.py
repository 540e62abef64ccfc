"""Rubric scoring: sub-goals, interactions, the prohibited-action gate, termination."""

import dataclasses
import json

from flywheel_assets.world.rollout import run_rollouts
from flywheel_assets.world.rubric import align_with_teacher, mentioned, score
from flywheel_assets.world.synthesis import seed_instances
from flywheel_assets.world.tasks import PathStep
from flywheel_assets.world.teacher import ScriptedTeacher


def _instances(task_type):
    batch = seed_instances(["retail"], 16, seed=4, round_key="r000")
    return [i for i in batch.instances if i.task_type == task_type]


class EditedTeacher(ScriptedTeacher):
    """The teacher with one deliberate mistake, to see that the rubric catches it."""

    def __init__(self, edit):
        super().__init__()
        self.edit = edit

    def next_message(self, request):
        return self.edit(request, super().next_message(request))


def _play(inst, policy):
    trajectory = run_rollouts([inst], policy)[0]
    return trajectory, score(inst, trajectory)


def test_teacher_meets_every_item_and_is_kept_with_alignment():
    inst = _instances("cancel_order")[0]
    trajectory, result = _play(inst, ScriptedTeacher())
    assert result.success and result.reward == 1.0 and result.gate is None
    kinds = {i.kind for i in inst.rubric.items}
    assert kinds == {"subgoal", "interaction", "prohibited", "termination"}
    verdict = align_with_teacher(inst, trajectory, result)
    assert verdict["verdict"] == "KEEP"
    write_item = next(i.item_id for i in inst.rubric.items if i.item_id.startswith("subgoal:call"))
    assert trajectory.messages[verdict["alignment"][write_item]]["tool_calls"][0]["function"]["name"] == "cancel_pending_order"


def test_wrong_argument_misses_the_subgoal_but_is_not_gated_if_the_write_fails():
    inst = _instances("cancel_order")[0]

    def wrong_reason(request, message):
        attempted = any(c["function"]["name"] == "cancel_pending_order"
                        for m in request.messages for c in m.get("tool_calls") or [])
        if attempted:  # give up after the failed write and report
            return {"role": "assistant", "content": inst.expected_path[-1].text}
        for call in message.get("tool_calls") or []:
            if call["function"]["name"] == "cancel_pending_order":
                args = json.loads(call["function"]["arguments"])
                call["function"]["arguments"] = json.dumps({**args, "order_id": "W0000000"})
        return message

    _, result = _play(inst, EditedTeacher(wrong_reason))
    failed = {i.item_id for i in result.failed_items()}
    assert "subgoal:final_state" in failed and any(f.startswith("subgoal:call") for f in failed)
    assert result.gate is None and 0 < result.reward < 1 and not result.success


def test_unexpected_successful_write_is_a_hard_gate():
    inst = next(i for i in _instances("cancel_order"))
    other = next(o for o in inst.initial_world["orders"].values()
                 if o["status"] == "pending" and o["order_id"] != inst.expected_path[-2].args["order_id"])
    path = list(inst.expected_path)
    path.insert(-1, PathStep(action="call", tool="cancel_pending_order",
                             args={"order_id": other["order_id"], "reason": "ordered by mistake"}))
    greedy = dataclasses.replace(inst, expected_path=path)  # the policy follows this path; the rubric is unchanged
    trajectory = run_rollouts([greedy], ScriptedTeacher())[0]
    result = score(inst, trajectory)
    assert result.reward == 0.0 and result.gate.startswith("prohibited:unexpected_write")


def test_write_before_verification_is_a_hard_gate():
    inst = _instances("cancel_order")[0]
    path = [s for s in inst.expected_path if s.tool != "find_user_id_by_email"]
    trajectory = run_rollouts([dataclasses.replace(inst, expected_path=path)], ScriptedTeacher())[0]
    result = score(inst, trajectory)
    assert result.reward == 0.0 and result.gate.startswith("prohibited:write_before_verification")


def test_not_ending_properly_scores_zero():
    inst = _instances("order_status")[0]
    trajectory = run_rollouts([inst], ScriptedTeacher(), max_turns=2)[0]
    result = score(inst, trajectory)
    assert trajectory.termination == "max_turns"
    assert result.reward == 0.0 and result.gate.startswith("termination")


def test_skipping_the_report_misses_the_interaction_item():
    inst = _instances("cancel_order")[0]

    def silent(request, message):
        if (message.get("content") or "").startswith("Your request is complete"):
            return {"role": "assistant", "content": "Done, goodbye."}
        return message

    _, result = _play(inst, EditedTeacher(silent))
    assert [i.item_id for i in result.failed_items()] == ["interaction:inform"]
    assert 0 < result.reward < 1
    status = _instances("order_status")[0]  # for a read-only request the report is the goal
    _, result = _play(status, EditedTeacher(silent))
    assert [i.item_id for i in result.failed_items()] == ["subgoal:inform"]


def test_mentions_match_numbers_by_value():
    assert mentioned("Your refund of $242.99 is on its way", 242.99)
    assert mentioned("refund: 1,000.00 dollars", 1000.0)
    assert not mentioned("refund: 242.9", 242.99)
    assert mentioned("Order W123 is CANCELLED", "cancelled")


def test_teacher_failure_is_discarded_with_a_reason():
    inst = _instances("cancel_order")[0]
    trajectory = run_rollouts([inst], ScriptedTeacher(), max_turns=3)[0]
    verdict = align_with_teacher(inst, trajectory, score(inst, trajectory))
    assert verdict["verdict"] == "DISCARD" and "max_turns" in verdict["reason"]


def test_unknown_check_type_is_a_clear_error_naming_the_known_types():
    import pytest

    from flywheel_assets.world.rubric_checks import CHECKS

    inst = _instances("cancel_order")[0]
    trajectory = run_rollouts([inst], ScriptedTeacher())[0]
    broken = dataclasses.replace(inst, rubric=dataclasses.replace(inst.rubric, items=[
        dataclasses.replace(inst.rubric.items[0], check={"type": "smelled_right"})]))
    with pytest.raises(ValueError, match="unknown rubric check type 'smelled_right'; known: ") as raised:
        score(broken, trajectory)
    assert all(name in str(raised.value) for name in CHECKS)
    assert {"called", "termination", "informed"} <= set(CHECKS)  # one registry decides every type the rubric builds
    assert {i.check["type"] for i in inst.rubric.items} <= set(CHECKS)


def test_handing_over_to_a_human_ends_the_episode_and_fails_the_termination_gate():
    inst = _instances("cancel_order")[0]
    assert all(i.check["allowed"] == ["user_stop"] for i in inst.rubric.items if i.kind == "termination")

    def transfer_at_once(request, message):
        return {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_0", "type": "function",
             "function": {"name": "transfer_to_human_agents", "arguments": json.dumps({"summary": "help"})}}]}

    trajectory, result = _play(inst, EditedTeacher(transfer_at_once))
    assert trajectory.termination == "transfer"
    assert result.reward == 0.0 and result.gate and result.gate.startswith("termination")


def test_each_failed_episode_has_one_failure_type_most_serious_first():
    from flywheel_assets.world.metrics import FAILURE_TYPES, failure_distribution, failure_type
    from flywheel_assets.world.tasks import ItemResult, Score, Trajectory

    def episode(failed: list[tuple[str, str]], calls: list[str] = ()):
        items = [ItemResult(item_id, kind, False) for item_id, kind in failed]
        messages = [{"role": "assistant", "content": None, "tool_calls": [
            {"id": f"c{i}", "type": "function", "function": {"name": name, "arguments": "{}"}}]}
            for i, name in enumerate(calls)]
        trajectory = Trajectory("t", "i", "p", messages, "user_stop", 1, {}, {}, {})
        return Score("s", "i", items or [ItemResult("termination", "termination", True)], 0.0, not items), trajectory

    cases = {
        "prohibited_action": episode([("subgoal:call:0:cancel", "subgoal"), ("prohibited:unexpected_write", "prohibited")]),
        "asked_nothing": episode([("interaction:asked:order_id", "interaction"), ("subgoal:final_state", "subgoal")]),
        "wrong_argument": episode([("subgoal:call:0:cancel_order", "subgoal")], calls=["get_order", "cancel_order"]),
        "missed_subgoal": episode([("subgoal:call:0:cancel_order", "subgoal")], calls=["get_order"]),
        "never_ended": episode([("termination", "termination")]),
    }
    for kind, (result, trajectory) in cases.items():
        assert failure_type(result, trajectory) == kind
    passed = episode([])
    assert failure_type(*passed) is None
    pairs = [cases[k] for k in FAILURE_TYPES] + [cases["wrong_argument"], passed]
    counts = failure_distribution([t for _, t in pairs], [s for s, _ in pairs])
    assert counts == {"prohibited_action": 1, "asked_nothing": 1, "wrong_argument": 2, "missed_subgoal": 1,
                      "never_ended": 1}
