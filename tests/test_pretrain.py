"""The embedded base's synthetic pretraining: it is what lets the tiny model copy values."""

import json
import math
import random

from flywheel_training.pretrain import PretrainConfig, copy_accuracy, pretrain, random_value, recall_conversation
from flywheel_training.tiny import TinyConfig, build_model, build_tokenizer

SMALL = TinyConfig(vocab_size=768, corpus_tasks_per_domain=1, hidden_size=64, intermediate_size=128,
                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512)


def _strings(message: dict) -> str:
    calls = message.get("tool_calls") or []
    return (message.get("content") or "") + "".join(c["function"]["arguments"] for c in calls)


def test_every_recalled_argument_was_stated_earlier_in_the_conversation():
    rng = random.Random(7)
    for _ in range(200):
        messages = recall_conversation(rng)
        assert messages[0]["role"] == "user" and messages[-1]["role"] == "assistant"
        for k, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            earlier = " ".join(_strings(m) for m in messages[:k])
            for value in json.loads(message["tool_calls"][0]["function"]["arguments"]).values():
                for part in (value if isinstance(value, list) else [value]):
                    assert str(part) in earlier


def test_random_values_take_the_domains_shapes():
    rng = random.Random(0)
    assert random_value("email", {"type": "string"}, rng).endswith("@example.com")
    assert random_value("reason", {"type": "string", "enum": ["lost", "stolen"]}, rng) in ("lost", "stolen")
    assert isinstance(random_value("gb", {"type": "integer"}, rng), int)
    assert isinstance(random_value("item_ids", {"type": "array"}, rng), list)
    assert random_value("phone_number", {"type": "string"}, rng).startswith("555-")


def test_the_induction_stage_forms_the_heads_that_copy():
    tokenizer = build_tokenizer(SMALL)
    model = build_model(tokenizer, SMALL)
    before = copy_accuracy(model, tokenizer)
    figures = pretrain(model, tokenizer, PretrainConfig(induction_steps=250, recall_steps=0))
    after = copy_accuracy(model, tokenizer)
    assert before < 0.05
    assert after > 0.8
    assert set(figures) == {"induction_loss", "induction_accuracy"}


def test_the_recall_stage_learns_to_copy_stated_values_into_tool_calls():
    # the first recall steps on top of fresh induction heads can scramble them on some CPUs
    # (a knife-edge at lr 1e-3 on this small model), so the stage is checked on its own
    tokenizer = build_tokenizer(SMALL)
    model = build_model(tokenizer, SMALL)
    figures = pretrain(model, tokenizer, PretrainConfig(induction_steps=0, recall_steps=60))
    assert set(figures) == {"recall_loss", "recall_accuracy"}
    assert figures["recall_loss"] < 0.7 * math.log(SMALL.vocab_size)  # well below a uniform guess
