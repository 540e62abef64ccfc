"""The domain kit: row lookups, named step references, condition factories and their
falsifiers, the packs' identifier patterns and the base digest over the packs' content."""

import dataclasses
import json
import random

import pytest

from flywheel_assets.world.domains import DOMAINS, get_domain
from flywheel_assets.world.domains.base import IdPattern, TaskDraft, ToolError, const, from_step, slot, step
from flywheel_assets.world.domains.kit import first_free, lookup, need, require_status, template
from flywheel_assets.world.synthesis import execute_workflow, synthesize_task
from flywheel_assets.world.tasks import ArgSource, copy_world
from flywheel_assets.world.tools import ProceduralToolBackend


def _retail_world():
    return get_domain("retail").generate_world(random.Random("kit"))


def test_lookup_returns_the_row_or_raises_the_domain_error():
    world = _retail_world()
    order_id = sorted(world["orders"])[0]
    assert lookup(world, "orders", f" {order_id} ", "order") is world["orders"][order_id]
    with pytest.raises(ToolError, match="^order W0000000 not found$"):
        lookup(world, "orders", "W0000000", "order")
    with pytest.raises(ToolError, match="is pending, not delivered or cancelled$"):
        require_status({"status": "pending"}, ("delivered", "cancelled"), "order W1")
    # the packs keep the texts and exact-key lookups they had before the kit, so rollouts are unchanged
    with pytest.raises(ToolError, match="^order  W1  not found$"):
        lookup(world, "orders", " W1 ", "order", normalize=None)
    with pytest.raises(ToolError, match="^user not found$"):
        lookup(world, "users", "nobody", "user", missing="user not found")
    with pytest.raises(ToolError, match="^bill B1 is paid$"):
        require_status({"status": "paid"}, ("unpaid", "overdue"), "bill B1", say_allowed=False)


def test_retail_tools_answer_as_before_the_kit():
    world, retail = _retail_world(), get_domain("retail")
    order_id = sorted(world["orders"])[0]
    with pytest.raises(ToolError, match=f"^order  {order_id}  not found$"):
        retail.tool("get_order_details").fn(world, {"order_id": f" {order_id} "})
    with pytest.raises(ToolError, match="^product not found$"):
        retail.tool("get_product_details").fn(world, {"product_id": "P0"})


def test_first_free_derives_a_new_value_that_is_not_taken():
    def following(number):
        return (number * 31 + 17) % 900 + 100

    def render(number):
        return f"K{number}"

    first, second = following(500), following(following(500))
    assert first_free(500, following, render, set()) == render(first)  # never the start itself
    assert first_free(500, following, render, {render(first)}) == render(second)  # a taken one is skipped


def _draft(workflow, outcome):
    return TaskDraft(goal="g", context={"order_id": "W1"}, workflow=workflow, outcome=outcome)


def test_named_step_references_resolve_to_positions_when_the_draft_is_built():
    lookup_step = step("get_order_details", "read", order_id=slot("order_id"))
    draft = _draft([step("find_user_id_by_email", "auth", email=slot("email")), lookup_step,
                    step("cancel_pending_order", "cancel", order_id=from_step("get_order_details", "order_id"))],
                   [from_step("cancel_pending_order", "refund_amount")])
    assert draft.workflow[2].args["order_id"] == ArgSource(kind="step", step=1, path=["order_id"])
    assert draft.outcome == [ArgSource(kind="step", step=2, path=["refund_amount"])]
    # Inserting a step shifts the position, not the meaning.
    longer = _draft([step("find_user_id_by_email", "auth", email=slot("email")), step("get_user_details", "u"),
                     lookup_step, step("cancel_pending_order", "c", order_id=from_step("get_order_details", "x"))],
                    [from_step("cancel_pending_order", "refund_amount")])
    assert longer.workflow[3].args["order_id"].step == 2 and longer.outcome[0].step == 3
    # A renamed step is found by its new name.
    renamed = _draft([lookup_step.named("order")], [from_step("order", "status")])
    assert renamed.outcome[0].step == 0


def test_bad_step_references_fail_at_build_time():
    read = step("get_order_details", "read", order_id=slot("order_id"))
    with pytest.raises(ValueError, match="no step is named 'get_order'.*get_order_details"):
        _draft([read], [from_step("get_order", "status")])
    with pytest.raises(ValueError, match="several steps are named 'get_order_details'"):
        _draft([read, read], [from_step("get_order_details", "status")])
    with pytest.raises(ValueError, match="does not come before it"):
        _draft([step("cancel_pending_order", "c", order_id=from_step("get_order_details", "order_id")), read], [])
    with pytest.raises(TypeError, match="step name, not a position"):
        from_step(1, "status")  # type: ignore[arg-type]


def test_drafts_never_share_an_argument_source():
    items = const(["W1-0"])
    a = _draft([step("return_delivered_order_items", "r", item_ids=items)], [items])
    b = _draft([step("return_delivered_order_items", "r", item_ids=items)], [items])
    a.workflow[0].args["item_ids"].value.append("W1-1")
    assert b.workflow[0].args["item_ids"].value == ["W1-0"] and a.outcome[0].value == ["W1-0"]


def test_template_returns_none_when_the_world_has_no_fitting_entity():
    @template("nothing", "Hi.", "Hello {name}.")
    def build(rng, world):
        need(None)
        raise AssertionError("need(None) stops the builder")

    assert build.build(random.Random(0), {}) is None and build.phrasings == ("Hi.", "Hello {name}.")


def _conditions():
    return [(name, c) for name in sorted(DOMAINS) for c in DOMAINS[name].conditions]


@pytest.mark.parametrize("domain_name,condition", _conditions(), ids=lambda v: getattr(v, "name", v))
def test_every_condition_holds_on_a_seed_task_and_its_falsifier_breaks_it(domain_name, condition):
    """Each factory-made condition bundles check, falsifier and reason: on a task whose
    workflow reads the condition, the check holds; after the falsifier it does not, and the
    refusal reason is a value of the read's output."""
    domain = get_domain(domain_name)
    backend = ProceduralToolBackend(domain)
    for attempt in range(60):
        template_ = domain.templates[attempt % len(domain.templates)]
        task = synthesize_task(domain, template_, f"kit/{condition.name}/{attempt}")
        steps = [s for s in task.workflow if s.tool == condition.read_tool] if task else []
        guarded = task and any(s.tool in condition.guards for s in task.workflow)
        if steps and guarded:
            break
    else:
        pytest.fail(f"no task reads {condition.read_tool} before a write {condition.name} guards")
    calls, outputs, _ = execute_workflow(domain, task.workflow, task.context, task.world)
    read_index = next(i for i, c in enumerate(calls) if c.tool == condition.read_tool)
    identity = outputs[0]
    assert condition.holds(outputs[read_index], identity)
    world = copy_world(task.world)
    condition.falsify(random.Random(0), world, dict(calls[read_index].args))
    result = backend.call(world, condition.read_tool, calls[read_index].args)
    after = json.loads(result.content)
    assert not condition.holds(after, identity)
    assert json.dumps(condition.reason(after)) in json.dumps(after)


def test_every_pack_declares_where_its_identifiers_stand():
    from flywheel_training.data import id_patterns, randomize_ids

    declared = {p.regex for d in DOMAINS.values() for p in d.id_patterns}
    assert declared == {regex.pattern for regex, _ in id_patterns()}
    assert all(d.id_patterns for d in DOMAINS.values())
    messages = [{"role": "user", "content": "My number is 555-1234 and I owe 45.99 on bill B1234567."},
                {"role": "tool", "content": json.dumps({"last4": "4821", "date_of_birth": "1980-02-03"})}]
    renamed = randomize_ids(messages, random.Random(0))
    assert "555-1234" not in renamed[0]["content"] and "555-" in renamed[0]["content"]  # telecom's phone pattern
    assert "45.99" in renamed[0]["content"] and "B1234567" not in renamed[0]["content"]
    assert "4821" not in renamed[1]["content"] and "1980-02-03" not in renamed[1]["content"]  # banking's
    with pytest.raises(ValueError, match="more than one group"):
        IdPattern(r"(\d+)-(\d+)")


def test_base_digest_covers_the_domain_packs(monkeypatch):
    from flywheel_training.tiny import TinyConfig, config_digest

    config = TinyConfig(domains=("retail",))
    before = config_digest(config)
    assert config_digest(config) == before and len(before) == 12
    retail = DOMAINS["retail"]
    monkeypatch.setitem(DOMAINS, "retail", dataclasses.replace(retail, policy=retail.policy + "\n- Be brief."))
    assert config_digest(config) != before
    monkeypatch.setitem(DOMAINS, "retail", retail)
    assert config_digest(config) == before
    # Every pack by default: another pack's change rebuilds the default base too.
    default = config_digest(TinyConfig())
    telecom = DOMAINS["telecom"]
    monkeypatch.setitem(DOMAINS, "telecom", dataclasses.replace(telecom, slots=telecom.slots[:-1]))
    assert config_digest(TinyConfig()) != default and config_digest(config) == before
