"""The warehouse-backed LLM call cache: entries survive the process (a new cache object
over the same file answers them), and a round played again with it calls no endpoint."""

from __future__ import annotations

from support.llm_server import ScriptedServer, world_responder

from flywheel_assets.llm_cache import WarehouseCallCache
from flywheel_assets.store.warehouse import Warehouse
from flywheel_assets.world.llm.client import EndpointConfig
from flywheel_assets.world.llm.roles import build_world_roles
from flywheel_assets.world.rollout import run_rollouts
from flywheel_assets.world.synthesis import seed_instances
from flywheel_assets.world.teacher import ScriptedTeacher


def entry(h: str, text: str) -> dict:
    return {"request_hash": h, "role": "tool", "model": "m", "response": {"role": "assistant", "content": text},
            "prompt_tokens": 3, "completion_tokens": 4, "latency_ms": 12.5, "first_round": "r001"}


def test_entries_are_buffered_then_persisted(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb")
    cache = WarehouseCallCache(warehouse, flush_every=100)
    assert cache.put_many([entry("a", "one"), entry("b", "two")]) == 2
    assert cache.get_many(["a", "zz"])["a"]["response"]["content"] == "one"  # from the buffer
    assert cache.flush() == 2
    fresh = WarehouseCallCache(Warehouse(tmp_path / "w.duckdb"))
    got = fresh.get_many(["a", "b", "c"])
    assert sorted(got) == ["a", "b"] and got["b"]["response"] == {"role": "assistant", "content": "two"}
    assert got["a"]["prompt_tokens"] == 3 and got["a"]["first_round"] == "r001"
    assert fresh.put_many([entry("a", "changed")]) == 1 and fresh.flush() == 0  # the first entry stays
    assert fresh.get_many(["a"])["a"]["response"]["content"] == "one"


def test_a_round_played_again_over_the_warehouse_makes_no_request(tmp_path):
    server = ScriptedServer(world_responder())
    try:
        instances = seed_instances(["retail"], 3, seed=0, round_key="r000").instances
        configs = {r: EndpointConfig(role=r, base_url=server.url, model="sim", max_retries=0, concurrency=8)
                   for r in ("user", "tool")}
        runs = []
        for _ in range(2):
            cache = WarehouseCallCache(Warehouse(tmp_path / "w.duckdb"), flush_every=8)
            world = build_world_roles(configs, cache=cache, round_key="r001", stage="rollouts")
            runs.append(run_rollouts(instances, ScriptedTeacher(), samples=2, max_turns=12,
                                     user_factory=world.user_factory, backend_for=world.backend_for))
            cache.flush()
            if len(runs) == 1:
                made = server.hits
        assert made > 0 and server.hits == made
        assert [t.to_dict() for t in runs[0]] == [t.to_dict() for t in runs[1]]
        assert all(r["cached"] for r in world.call_rows())
    finally:
        server.close()
