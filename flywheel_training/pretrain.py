"""Synthetic pretraining of the embedded base: the circuits that copying a value needs.

A real base checkpoint arrives with induction heads (attend to where the current token
occurred before, predict what followed it) from pretraining on text. A random-init model
trained only on one round's few hundred conversations never gets them: it memorises the
values of its training conversations and writes plausible but wrong ids and emails into
its tool calls (measured: 0 of 140 held-out calls with the right arguments). So the
embedded base is pretrained briefly, offline and on synthetic data, in two stages:

1. **induction**: random token spans, each repeated once; loss on the repeat, which only
   copying can predict. Dense (every target is a copy), so the heads form within a few
   hundred steps.
2. **recall**: short chats in the Qwen3 template where the user states a few facts
   (``My order id is W4821637.``) or a tool result lists them, and the assistant calls a
   domain tool with some of them. Values are random in the shapes the domains use, so
   again only copying predicts them; the loss covers the assistant's tokens.

SFT then teaches the task on top of heads that already copy (at a learning rate low
enough to keep them: see ``config.TrainingConfig``).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flywheel_assets.world.domains import DOMAINS, get_domain
from flywheel_assets.world.domains.names import CITIES, FIRST_NAMES, LAST_NAMES, STREETS
from flywheel_training.chat import arguments_as_json_strings

ID_LETTERS = "ABCDEFGHKLMNPRSTVW"
PHRASINGS = ("My {phrase} is {value}.", "my {phrase} it is {value}", "{value}", "The {phrase} is {value}.",
             "{phrase}: {value}")


@dataclass(frozen=True)
class PretrainConfig:
    induction_steps: int = 400
    induction_batch: int = 16
    induction_span: int = 64  # tokens per span; each sequence is the span twice
    recall_steps: int = 800
    recall_batch: int = 8
    recall_length: int = 256  # tokens per packed row
    learning_rate: float = 1e-3
    warmup_steps: int = 20
    max_grad_norm: float = 1.0
    seed: int = 0


def random_value(name: str, schema: dict[str, Any], rng: random.Random) -> Any:
    """A random value of the shape a domain argument called ``name`` takes."""
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    kind = schema.get("type")
    if kind == "integer":
        return rng.randint(1, 12)
    if kind == "number":
        return round(rng.uniform(5, 2000), rng.choice((0, 2)))
    if kind == "array":
        stem = rng.choice(ID_LETTERS) + str(rng.randint(1_000_000, 9_999_999))
        return [f"{stem}-{i}" for i in rng.sample(range(4), rng.randint(1, 2))]
    if "email" in name:
        return f"{rng.choice(FIRST_NAMES)}.{rng.choice(LAST_NAMES)}{rng.randint(10, 999)}@example.com"
    if "phone" in name:
        return f"555-{rng.randint(1000, 9999)}"
    if "date" in name:
        return f"{rng.randint(1950, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if "last4" in name or name == "zip":
        return str(rng.randint(10_000, 99_999))[-(4 if "last4" in name else 5):]
    if name == "street":
        return f"{rng.randint(10, 999)} {rng.choice(STREETS)}"
    if name in ("city", "origin", "destination"):
        return rng.choice(CITIES)[0]
    if name == "payment_method_id":
        return f"{rng.choice(('card', 'bank', 'gift_card', 'paypal'))}_{rng.randint(1000, 9999)}"
    if name.endswith("id") or name == "flight_number":
        letters = rng.choice(ID_LETTERS) + (rng.choice(ID_LETTERS) if name == "flight_number" else "")
        return letters + str(rng.randint(1000, 9_999_999))
    return " ".join(rng.choice(LAST_NAMES + tuple(s.split()[0] for s in STREETS)) for _ in range(rng.randint(1, 3)))


def _phrase(domain: Any, name: str) -> str:
    try:
        return domain.slot(name).phrase
    except KeyError:
        return name.replace("_", " ")


def recall_conversation(rng: random.Random) -> list[dict[str, Any]]:
    """User facts (or a tool result) → assistant tool calls that copy some of them."""
    domain = get_domain(rng.choice(sorted(DOMAINS)))
    tools = [s for s in domain.tool_specs if (s.parameters.get("properties") or {})]
    messages: list[dict[str, Any]] = []
    known: dict[str, Any] = {}
    # mostly one turn (facts from the user), sometimes a second that copies from a tool result:
    # short sequences keep the batch cheap on CPU, which decides how many steps fit
    for turn in range(1 if rng.random() < 0.7 else 2):
        spec = rng.choice(tools)
        properties = spec.parameters["properties"]
        wanted = {name: random_value(name, schema, rng) for name, schema in properties.items()}
        distractors = {name: random_value(name, schema, rng)
                       for other in rng.sample(tools, 2) for name, schema in other.parameters["properties"].items()
                       if name not in wanted}
        facts = [*wanted.items(), *rng.sample(sorted(distractors.items()), min(rng.randint(0, 2), len(distractors)))]
        rng.shuffle(facts)
        if turn == 0:
            # a bare value is the terse user's one fact per turn: among several it names nothing
            phrasing = rng.choice(PHRASINGS if len(facts) == 1 else PHRASINGS[:2] + PHRASINGS[3:])
            text = " ".join(phrasing.format(phrase=_phrase(domain, n), value=json.dumps(v) if isinstance(v, list)
                                            else v) for n, v in facts)
            messages.append({"role": "user", "content": text})
        else:
            messages.append({"role": "tool", "content": json.dumps(dict(facts))})
        known.update(wanted)
        call = {"id": f"call_{turn}", "type": "function",
                "function": {"name": spec.name, "arguments": json.dumps({n: known[n] for n in properties})}}
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    return messages


def _ordinary_ids(tokenizer: Any) -> Any:
    """Every token id that is not a special token, as a tensor."""
    import torch

    special = set(tokenizer.all_special_ids)
    return torch.tensor([i for i in range(len(tokenizer)) if i not in special])


def _repeated_spans(ordinary: Any, rows: int, span: int, generator: Any) -> Any:
    """``rows`` random spans of ``span`` ordinary tokens, each followed by itself."""
    import torch

    first = ordinary[torch.randint(len(ordinary), (rows, span), generator=generator)]
    return torch.cat([first, first], dim=1)


def _encode_recall(tokenizer: Any, messages: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    rendered = tokenizer.apply_chat_template(arguments_as_json_strings(messages), tokenize=True, return_dict=True,
                                             return_assistant_tokens_mask=True)
    ids = list(rendered["input_ids"])
    return ids, [t if m else -100 for t, m in zip(ids, rendered["assistant_masks"])]


def pretrain(model: Any, tokenizer: Any, config: PretrainConfig = PretrainConfig(),
             log: Callable[[str], None] | None = None) -> dict[str, float]:
    """Run both stages on ``model`` in place; returns the last loss and copy accuracy of each."""
    import torch

    torch.manual_seed(config.seed)
    rng = random.Random(f"pretrain/{config.seed}")
    generator = torch.Generator().manual_seed(config.seed)
    ordinary = _ordinary_ids(tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
    pad = tokenizer.pad_token_id

    def induction_batch() -> tuple[Any, Any, Any]:
        ids = _repeated_spans(ordinary, config.induction_batch, config.induction_span, generator)
        labels = ids.clone()
        labels[:, :config.induction_span + 1] = -100  # the first token of the repeat is not predictable yet
        return ids, labels, torch.ones_like(ids)

    def recall_batch() -> tuple[Any, Any, Any]:
        # conversations packed back to back into rows of recall_length tokens: no padding,
        # and the earlier conversations of a row are distractors for the later ones
        rows = []
        for _ in range(config.recall_batch):
            ids: list[int] = []
            labels: list[int] = []
            while len(ids) < config.recall_length:
                more_ids, more_labels = _encode_recall(tokenizer, recall_conversation(rng))
                ids += more_ids
                labels += more_labels
            rows.append((ids[:config.recall_length], labels[:config.recall_length]))
        ids = torch.tensor([row for row, _ in rows])
        return ids, torch.tensor([labels for _, labels in rows]), torch.ones_like(ids)

    model.train()
    figures: dict[str, float] = {}
    step = 0
    for stage, steps, make in (("induction", config.induction_steps, induction_batch),
                               ("recall", config.recall_steps, recall_batch)):
        started = time.perf_counter()
        for stage_step in range(steps):
            ids, labels, mask = make()
            out = model(input_ids=ids, attention_mask=mask, labels=labels)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate * min(1.0, (step + 1) / config.warmup_steps)
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            if stage_step == steps - 1 or (log and stage_step % 100 == 0):
                with torch.no_grad():
                    target = labels[:, 1:]
                    keep = target != -100
                    accuracy = (out.logits[:, :-1].argmax(-1)[keep] == target[keep]).float().mean().item()
                figures.update({f"{stage}_loss": round(out.loss.item(), 4), f"{stage}_accuracy": round(accuracy, 4)})
                if log:
                    log(f"pretrain {stage} step {stage_step + 1}/{steps}: loss {out.loss.item():.3f}, "
                        f"next-token accuracy {accuracy:.3f} ({time.perf_counter() - started:.0f}s)")
    model.eval()
    return figures


def copy_accuracy(model: Any, tokenizer: Any, *, spans: int = 16, span: int = 64, seed: int = 12_345) -> float:
    """Share of a repeated random span's tokens that greedy prediction gets right: ~0 for a
    model without induction heads, ~1 with them."""
    import torch

    ids = _repeated_spans(_ordinary_ids(tokenizer), spans, span, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    return float((logits[:, span:-1].argmax(-1) == ids[:, span + 1:]).float().mean())
