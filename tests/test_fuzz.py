"""10,000 fuzzed assistant messages through the environment: nothing escapes, each one
becomes an error observation or a scored turn."""

import json
import random

from flywheel_assets.world.domains import get_domain
from flywheel_assets.world.rollout import Episode
from flywheel_assets.world.rubric import score
from flywheel_assets.world.synthesis import seed_instances
from flywheel_assets.world.tools import ProceduralToolBackend, TaskToolCache
from flywheel_assets.world.users import ProceduralUser

MEGABYTE = "x" * 1_000_000


def fuzzed_message(rng: random.Random, tool_names: list[str]):
    name = rng.choice(tool_names + ["", "nope", "__import__('os').system('rm -rf /')", "x" * 500, None, 42])
    arguments = rng.choice([
        "{not json", "[]", "null", "42", '"str"', "{}", '{"order_id": 123}', '{"order_id": null}',
        '{"email": ["a"]}', json.dumps({"order_id": MEGABYTE}) if rng.random() < 0.02 else '{"a": 1}',
        "'; DROP TABLE rollouts; --", '{"__class__": "os.system"}', {"order_id": "W1"}, 17, None,
        "[" * 5000, '{"reason": "no longer needed", "order_id": "W1", "extra": true}',
    ])
    call = rng.choice([
        {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}},
        {"function": {"name": name}}, {"function": "oops"}, "not a call", None, [1, 2],
        {"id": 5, "function": {"name": name, "arguments": arguments}},
    ])
    content = rng.choice([None, "", "What is your email?", "import os; os.system('ls')", "```python\nexec(x)\n```",
                          MEGABYTE if rng.random() < 0.02 else "ok", 12, ["list"], {"dict": 1}, "\x00\ud7ff",
                          "<tool_call>{\"name\": \"x\"}</tool_call>"])
    return rng.choice([
        {"role": "assistant", "content": content, "tool_calls": [call]},
        {"role": "assistant", "content": content, "tool_calls": rng.choice([call, "x", 3, [call, call]])},
        {"content": content},
        content,
        None,
        12345,
        [content, call],
        {"tool_calls": [call] * rng.randint(0, 3)},
    ])


def test_ten_thousand_fuzzed_messages_never_escape():
    rng = random.Random(1234)
    instances = seed_instances(["retail", "banking"], 10, seed=9, round_key="r000").instances
    observed = 0
    sent = 0
    while sent < 10_000:
        inst = instances[sent % len(instances)]
        domain = get_domain(inst.domain)
        cache = TaskToolCache(ProceduralToolBackend(domain), inst.initial_world)
        episode = Episode(inst, domain, cache.session(), ProceduralUser(inst, domain), max_turns=50)
        tool_names = [t.name for t in domain.tools]
        while not episode.done and sent < 10_000:
            before = len(episode.messages)
            episode.step(fuzzed_message(rng, tool_names))
            sent += 1
            new = episode.messages[before:]
            assert new[0]["role"] == "assistant"
            assert len(new) >= 2 or episode.done, new  # every message got an observation or ended it
            observed += len(new) - 1
            json.dumps(new)  # recorded messages stay valid JSON
        result = score(inst, episode.trajectory("fuzz"))
        assert 0.0 <= result.reward <= 1.0
    assert sent == 10_000 and observed >= 9_000
