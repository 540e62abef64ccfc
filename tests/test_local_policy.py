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


def _converse(policy, instances, turns):
    """Three conversations of different lengths, batched, each reply followed by a user turn."""
    chats = [[{"role": "system", "content": "You are an agent."}, {"role": "user", "content": "hello " * n}]
             for n in (1, 6, 11)]
    for turn in range(turns):
        replies = policy.generate([PolicyRequest(c, [], instances[i % 2], sample=i) for i, c in enumerate(chats)])
        for chat, reply in zip(chats, replies):
            chat += [reply, {"role": "user", "content": f"turn {turn}: go on " + "please " * turn}]
    return chats


def test_prefix_cache_reuses_earlier_turns_and_changes_nothing(base, instances):
    """Each turn reuses the keys and values of the tokens the episode's last turn ran, and
    the conversations come out exactly as when every turn recomputes its whole prompt."""
    settings = dict(max_new_tokens=16, max_batch_size=2)
    cached = LocalTransformersPolicy(base, settings=GenerationSettings(**settings))
    plain = LocalTransformersPolicy(base, settings=GenerationSettings(**settings, prefix_cache=False))
    assert _converse(cached, instances, 4) == _converse(plain, instances, 4)
    assert plain.cache is None
    # every turn after the first found its conversation's earlier tokens: most of the prompt
    assert cached.cache.reused_tokens > 0.5 * cached.prompt_tokens
    assert len(cached.cache.entries) == 3
    cached.generate([PolicyRequest([{"role": "user", "content": "hi"}], [], instances[0], sample=7)])
    assert list(cached.cache.entries) == [f"{instances[0].instance_id}/7"]  # ended episodes are forgotten


def test_prefix_cache_falls_back_when_the_conversation_changes(base, instances):
    """Reuse follows token ids only: an edited earlier message reuses just the prefix
    before the edit, and the reply is the one a fresh prompt gets."""
    policy = LocalTransformersPolicy(base, settings=GenerationSettings(max_new_tokens=10))
    fresh = LocalTransformersPolicy(base, settings=GenerationSettings(max_new_tokens=10, prefix_cache=False))
    history = [{"role": "system", "content": "You are an agent."}, {"role": "user", "content": "first question"}]
    policy.generate([PolicyRequest(history, [], instances[0])])
    edited = [history[0], {"role": "user", "content": "a different first question"},
              {"role": "assistant", "content": "ok"}, {"role": "user", "content": "and then?"}]
    reused_before = policy.cache.reused_tokens
    reply = policy.generate([PolicyRequest(edited, [], instances[0])])
    reused = policy.cache.reused_tokens - reused_before
    assert 0 < reused < len(policy.prompt_ids(edited, []))
    assert reply == fresh.generate([PolicyRequest(edited, [], instances[0])])


def test_sampled_generation_is_the_same_with_the_prefix_cache(base, instances):
    settings = dict(max_new_tokens=12, temperature=1.0, seed=3, max_batch_size=2)
    sampled = _converse(LocalTransformersPolicy(base, settings=GenerationSettings(**settings)), instances, 3)
    plain = LocalTransformersPolicy(base, settings=GenerationSettings(**settings, prefix_cache=False))
    assert sampled == _converse(plain, instances, 3)


def test_each_row_samples_from_its_own_seed():
    torch = pytest.importorskip("torch")
    from flywheel_training.policies.sampling import RowSeededSampler

    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0]] * 3)
    alone = RowSeededSampler([7], temperature=1.0)
    together = RowSeededSampler([1, 7, 2], temperature=1.0)
    for _ in range(20):  # row 7's draws do not depend on the rows beside it
        assert alone(None, logits[:1]).argmax(-1).item() == together(None, logits)[1].argmax(-1).item()
    draws = RowSeededSampler(range(400), temperature=1.0)(None, torch.tensor([[2.0, 1.0, 0.5, 0.0]] * 400))
    picked = draws.argmax(-1)
    assert torch.isinf(draws).sum(-1).eq(3).all()  # one token left per row
    assert picked.eq(0).float().mean().item() > 0.4 and picked.eq(3).any()  # ~ softmax: 0.58 .. 0.08
    nucleus = RowSeededSampler(range(200), temperature=1.0, top_p=0.5)(None, torch.tensor([[2.0, 1.0, 0.5, 0.0]] * 200))
    assert nucleus.argmax(-1).eq(0).all()  # the top token alone holds 0.58 >= top_p


def test_a_row_that_drew_a_stop_token_draws_no_more():
    torch = pytest.importorskip("torch")
    from flywheel_training.policies.sampling import RowSeededSampler

    certain_stop = torch.tensor([[0.0, 0.0, 0.0, 50.0], [2.0, 1.0, 0.5, float("-inf")]])
    skipping = RowSeededSampler([5, 9], temperature=1.0, stop_ids=[3])
    plain = RowSeededSampler([5, 9], temperature=1.0)
    assert skipping(None, certain_stop).argmax(-1).tolist()[0] == 3 and skipping.finished == [True, False]
    drawn_state = skipping.generators[0].get_state()
    plain(None, certain_stop)
    logits = torch.tensor([[2.0, 1.0, 0.5, float("-inf")]] * 2)  # row 1 never stops
    for _ in range(10):  # the finished row's generator rests; the other row draws as it would anyway
        assert skipping(None, logits)[1].argmax().item() == plain(None, logits)[1].argmax().item()
    assert torch.equal(skipping.generators[0].get_state(), drawn_state)
    assert not torch.equal(plain.generators[0].get_state(), drawn_state)


def test_the_prefix_cache_keeps_within_its_memory_budget(base, instances):
    roomy = LocalTransformersPolicy(base, settings=GenerationSettings(max_new_tokens=16, max_batch_size=2))
    expected = _converse(roomy, instances, 3)
    budget = roomy.cache.held_bytes() // 2  # room for about half the conversations
    tight = LocalTransformersPolicy(base, settings=GenerationSettings(max_new_tokens=16, max_batch_size=2,
                                                                      prefix_cache_bytes=budget))
    assert _converse(tight, instances, 3) == expected  # what does not fit is recomputed, not lost
    assert tight.cache.skipped > 0 and 0 < tight.cache.held_bytes() <= budget
    assert 0 < tight.cache.reused_tokens < roomy.cache.reused_tokens
