"""The task-level consistency cache: identical calls give identical responses within a
task, writes are seen by later reads, and the cache is a layer over any backend."""

import json

from flywheel_assets.world.domains import get_domain
from flywheel_assets.world.synthesis import seed_instances
from flywheel_assets.world.tools import ProceduralToolBackend, TaskToolCache, ToolResult

RETAIL = get_domain("retail")


def _pending_order(world):
    return next(o for o in sorted(world["orders"].values(), key=lambda o: o["order_id"]) if o["status"] == "pending")


def _cancel_instance():
    batch = seed_instances(["retail"], 8, seed=1, round_key="r000")
    return next(i for i in batch.instances if i.task_type == "cancel_order")


class CountingBackend:
    """A stand-in for the LLM-simulated tool: counts how often it is really asked, and
    answers differently every time, so only the cache can make answers consistent."""

    def __init__(self):
        self.inner = ProceduralToolBackend(RETAIL)
        self.calls = 0

    def call(self, world, name, arguments):
        self.calls += 1
        result = self.inner.call(world, name, arguments)
        if result.ok and not result.wrote:
            payload = json.loads(result.content)
            return ToolResult(json.dumps({"answer": payload, "nonce": self.calls}), True, False)
        return result


def test_identical_calls_within_a_task_return_identical_responses():
    inst = _cancel_instance()
    backend = CountingBackend()
    cache = TaskToolCache(backend, inst.initial_world)
    order_id = inst.expected_path[-2].args["order_id"]
    first, second = cache.session(), cache.session()
    a = first.call("get_order_details", {"order_id": order_id})
    b = first.call("get_order_details", {"order_id": order_id})
    c = second.call("get_order_details", {"order_id": order_id})  # another episode of the same task
    assert a.content == b.content == c.content
    assert backend.calls == 1
    assert cache.stats.hits == 2 and cache.stats.misses == 1
    assert first.stats.as_dict() == {"hits": 1, "misses": 1, "errors": 0}


def test_argument_order_does_not_matter_to_the_cache():
    inst = _cancel_instance()
    session = TaskToolCache(CountingBackend(), inst.initial_world).session()
    step = next(s for s in inst.expected_path if s.tool == "find_user_id_by_email")
    step.args["unused"] = "x"  # two keys so the order can differ; invalid, and errors are cached too
    reordered = dict(reversed(list(step.args.items())))
    assert session.call(step.tool, step.args).content == session.call(step.tool, reordered).content
    assert session.stats.hits == 1


def test_a_write_is_seen_by_later_reads():
    inst = _cancel_instance()
    cancel = inst.expected_path[-2]
    session = TaskToolCache(ProceduralToolBackend(RETAIL), inst.initial_world).session()
    before = json.loads(session.call("get_order_details", {"order_id": cancel.args["order_id"]}).content)
    assert before["status"] == "pending"
    wrote = session.call(cancel.tool, cancel.args)
    assert wrote.ok and wrote.wrote
    after = json.loads(session.call("get_order_details", {"order_id": cancel.args["order_id"]}).content)
    assert after["status"] == "cancelled"
    again = session.call(cancel.tool, cancel.args)  # a repeated write sees the new state
    assert not again.ok and "not pending" in again.content


def test_a_cached_write_replays_its_state_change_in_another_episode():
    inst = _cancel_instance()
    cancel = inst.expected_path[-2]
    backend = CountingBackend()
    cache = TaskToolCache(backend, inst.initial_world)
    first, second = cache.session(), cache.session()
    first.call(cancel.tool, cancel.args)
    calls = backend.calls
    second.call(cancel.tool, cancel.args)
    assert backend.calls == calls  # served from the cache...
    assert second.world == first.world  # ...and the second episode's world changed too
    assert second.version == first.version != cache.initial_version
    assert inst.initial_world["orders"][cancel.args["order_id"]]["status"] == "pending"


def test_episodes_diverge_after_different_writes():
    inst = _cancel_instance()
    cancel = inst.expected_path[-2]
    cache = TaskToolCache(ProceduralToolBackend(RETAIL), inst.initial_world)
    first, second = cache.session(), cache.session()
    first.call(cancel.tool, cancel.args)
    read = {"order_id": cancel.args["order_id"]}
    assert json.loads(first.call("get_order_details", read).content)["status"] == "cancelled"
    assert json.loads(second.call("get_order_details", read).content)["status"] == "pending"


def test_errors_are_counted_and_failed_writes_change_nothing():
    inst = _cancel_instance()
    session = TaskToolCache(ProceduralToolBackend(RETAIL), inst.initial_world).session()
    world_before = json.dumps(session.world, sort_keys=True)
    delivered = next((o for o in session.world["orders"].values() if o["status"] != "pending"), None)
    assert delivered is not None
    result = session.call("cancel_pending_order", {"order_id": delivered["order_id"], "reason": "no longer needed"})
    assert not result.ok and result.content.startswith("Error:")
    assert not session.call("no_such_tool", {}).ok
    assert not session.call("get_order_details", {"order_id": 7}).ok
    assert session.stats.errors == 3
    assert json.dumps(session.world, sort_keys=True) == world_before
