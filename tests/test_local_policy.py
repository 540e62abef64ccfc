"""The local transformers policy: batched generation through the rollout runner."""

from __future__ import annotations

import pytest

from flywheel_assets.world.rollout import PolicyRequest, run_rollouts
from flywheel_assets.world.rubric import score
from flywheel_assets.world.synthesis import seed_instances
from flywheel_training.policies.local import GenerationSettings, LocalTransformersPolicy
from flywheel_training.tiny import TinyConfig, build_tiny

SMALL = TinyConfig(induction_steps=4, recall_steps=4, vocab_size=768, corpus_tasks_per_domain=1, hidden_size=64, intermediate_size=128,
                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("tiny") / "base", SMALL)


@pytest.fixture(scope="module")
def instances():
    return seed_instances(["retail", "banking"], 2, seed=11, round_key="r000").instances


def test_untrained_model_plays_episodes_without_exceptions(base, instances):
    policy = LocalTransformersPolicy(base, settings=GenerationSettings(max_new_tokens=24, max_batch_size=3))
    trajectories = run_rollouts(instances, policy, samples=2, max_turns=4)
    assert len(trajectories) == 2 * len(instances)
    by_id = {i.instance_id: i for i in instances}
    for t in trajectories:
        assert t.turns == 4 or t.termination != "max_turns"
        assert all(m["role"] in ("system", "user", "assistant", "tool") for m in t.messages)
        score(by_id[t.instance_id], t)  # garbage is scored, not raised
    assert policy.generated_tokens > 0


def test_greedy_is_deterministic_and_sampling_differs_by_sample_index(base, instances):
    greedy = LocalTransformersPolicy(base, settings=GenerationSettings(max_new_tokens=12))
    a = run_rollouts(instances[:2], greedy, max_turns=2)
    b = run_rollouts(instances[:2], greedy, max_turns=2)
    assert [t.messages for t in a] == [t.messages for t in b]
    sampler = LocalTransformersPolicy(base, settings=GenerationSettings(max_new_tokens=12, temperature=1.0, seed=5))
    first = run_rollouts(instances[:1], sampler, samples=2, max_turns=1)
    again = run_rollouts(instances[:1], sampler, samples=2, max_turns=1)
    assert [t.messages for t in first] == [t.messages for t in again]  # seeded
    assert first[0].messages[2] != first[1].messages[2]  # samples of one instance differ


def test_batched_and_single_greedy_generation_agree(base, instances):
    policy = LocalTransformersPolicy(base, settings=GenerationSettings(max_new_tokens=10))
    requests = [PolicyRequest([{"role": "system", "content": "You are an agent."},
                               {"role": "user", "content": "hello " * n}], [], instances[0]) for n in (1, 5, 9)]
    batched = policy.generate(requests)
    single = [policy.generate([r])[0] for r in requests]
    assert batched == single  # left padding does not change what a conversation gets


def test_long_conversations_are_truncated_keeping_the_system_prompt(base, instances):
    policy = LocalTransformersPolicy(base, settings=GenerationSettings(max_new_tokens=8, max_prompt_tokens=200))
    messages = [{"role": "system", "content": "SYSTEM-PROMPT-MARKER"}]
    for i in range(60):
        messages.append({"role": "user", "content": f"turn {i} " + "word " * 10})
        messages.append({"role": "assistant", "content": f"answer {i}"})
    messages.append({"role": "user", "content": "LAST-TURN-MARKER"})
    ids = policy.prompt_ids(messages, [])
    text = policy.tokenizer.decode(ids)
    assert len(ids) <= 200
    assert "SYSTEM-PROMPT-MARKER" in text and "LAST-TURN-MARKER" in text and "turn 0 " not in text
    reply = policy.generate([PolicyRequest(messages, [], instances[0])])[0]
    assert reply["role"] == "assistant"
