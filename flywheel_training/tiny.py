"""The embedded model: a tiny Qwen3 built locally, with a tokenizer trained on Mock World text.

Nothing is downloaded. The tokenizer is a byte-level BPE trained on rendered teacher
conversations (tool schemas included), and the model is ``Qwen3ForCausalLM`` with random
weights; both are saved as an ordinary Hugging Face folder that ``from_pretrained`` loads
and that every trainer and policy treats like a real Qwen3 checkpoint. The same seed
always gives the same folder (same files, same hash).

The pre-tokenizer is the part that decides whether the model can learn to copy values:
words, ids, emails, dates and numbers are single pre-tokens with no whitespace or JSON
punctuation attached, so ``leo.ali@example.com`` is the same token sequence in the user's
text and inside ``{"email": "leo.ali@example.com"}``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

from flywheel_training.chat import (  # noqa: E402
    END_OF_TEXT,
    IM_END,
    IM_START,
    MARKUP_TOKENS,
    VIEW_KEY,
    qwen3_training_template,
)

PRE_TOKEN_PATTERN = r"[^\w\s]+(?: [^\w\s]+)*|\s+|\w+(?:[.@+\-/:']\w+)*"
"""Punctuation runs, with single inner spaces so JSON's ``": "`` and ``", "`` are one piece |
whitespace runs | words with inner connectors (ids, emails, dates, decimals, times). Every
character falls in one branch, so splitting loses nothing, and a word never carries the
space or quote before it: the same value is the same tokens in prose and in JSON."""


@dataclass(frozen=True)
class TinyConfig:
    """Sizes of the embedded model and its tokenizer corpus.

    Defaults are chosen for CPU: a few hundred training steps per round on 2 cores fit in
    about five minutes, and the output layer (vocabulary x hidden) is not allowed to
    dominate compute, hence a small vocabulary.
    """

    seed: int = 0
    vocab_size: int = 3072
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 64  # wider heads: a larger cap on attention logits under Qwen3's q/k norm
    max_position_embeddings: int = 6144
    rope_theta: float = 10000.0
    digit_group: int = 2  # digits are tokens of this many (see _pre_tokenizer); 0 leaves them to BPE
    local_window: int = 16  # > 0: the first layer attends only this many tokens back (see _layer_types)
    qk_norm_init: float = 1.0  # initial weight of Qwen3's per-head q/k RMSNorm (see build_model)
    prompt_view: str = "compact"  # see chat.apply_view: short system prompt and tool schemas
    induction_steps: int = 400  # synthetic pretraining (see pretrain.py): the heads that copy values
    recall_steps: int = 800
    corpus_tasks_per_domain: int = 12
    corpus_seed: int = 424_242  # distinct from round and held-out seeds: the tokenizer sees no eval task
    domains: tuple[str, ...] = field(default_factory=tuple)  # empty: every domain pack


def _pre_tokenizer(digit_group: int = 2) -> pre_tokenizers.PreTokenizer:
    """Words and punctuation (``PRE_TOKEN_PATTERN``), digit runs cut into groups of
    ``digit_group`` (0: digits stay with BPE), then bytes mapped to printable symbols so
    any input, including unseen unicode, encodes without an unknown token.

    Why digit groups: BPE on random ids learns hundreds of rare digit chunks whose
    embeddings barely train, and a small model then cannot copy ids at all (measured: 2 %
    of such tokens right, against 91 % for word pieces). Single digits are frequent but
    ambiguous to copy (the same digit pair recurs across the numbers in a conversation).
    Pairs are both: 100 tokens that every id trains, and distinctive in context.
    """
    steps = [pre_tokenizers.Split(Regex(PRE_TOKEN_PATTERN), behavior="isolated")]
    if digit_group:
        steps += [pre_tokenizers.Digits(individual_digits=False),
                  pre_tokenizers.Split(Regex(rf"\d{{{digit_group}}}"), behavior="isolated")]
    return pre_tokenizers.Sequence([*steps, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def corpus(config: TinyConfig) -> Iterator[str]:
    """Rendered teacher conversations of one round's worth of instances (seed, branched and
    adversarial), each with its domain's tool schemas, plus the system prompts and schemas
    on their own so every tool name and description is in the vocabulary."""
    import json

    from flywheel_assets.world.domains import DOMAINS, get_domain
    from flywheel_assets.world.pipeline import RoundConfig, behavior_trees, seed_tasks, task_instances
    from flywheel_assets.world.rollout import run_rollouts
    from flywheel_assets.world.teacher import ScriptedTeacher

    domains = config.domains or tuple(sorted(DOMAINS))
    round_config = RoundConfig(seed=config.corpus_seed, domains=domains, tasks_per_domain=config.corpus_tasks_per_domain)
    seed = seed_tasks(round_config, "r000")
    instances = task_instances(round_config, "r000", seed, behavior_trees(seed.tasks))
    trajectories = run_rollouts(instances, ScriptedTeacher(), max_turns=round_config.max_turns)
    tools = {d: [s.openai_schema() for s in get_domain(d).tool_specs] for d in domains}
    for d in domains:
        yield get_domain(d).system_prompt()
        yield json.dumps(tools[d])
    by_id = {i.instance_id: i for i in instances}
    for t in trajectories:
        yield render_conversation(t.messages, tools[by_id[t.instance_id].domain])


def render_conversation(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
    """A conversation as the template renders it, without needing a tokenizer (the corpus
    exists before the tokenizer does); transformers' own renderer, so it is the same text."""
    from transformers.utils.chat_template_utils import render_jinja_template

    from flywheel_training.chat import arguments_as_json_strings

    rendered, _ = render_jinja_template([arguments_as_json_strings(messages)], tools=tools,
                                        chat_template=qwen3_training_template())
    return rendered[0]


def train_tokenizer(texts: Sequence[str] | Iterator[str], vocab_size: int, digit_group: int = 2) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = _pre_tokenizer(digit_group)
    tokenizer.decoder = decoders.ByteLevel()
    special = [AddedToken(t, special=True, normalized=False) for t in (END_OF_TEXT, IM_START, IM_END)]
    markup = [AddedToken(t, special=False, normalized=False) for t in MARKUP_TOKENS]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[t.content for t in special])
    # Markup is registered before training so BPE never learns merges across it.
    tokenizer.add_special_tokens(special)
    tokenizer.add_tokens(markup)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def wrap_tokenizer(tokenizer: Tokenizer, model_max_length: int, prompt_view: str = "full") -> Any:
    """A ``PreTrainedTokenizerFast`` with Qwen3's special-token roles and TRL's Qwen3
    training template (TRL recognises it and masks assistant turns for the loss)."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=IM_END, pad_token=END_OF_TEXT,
                                   model_max_length=model_max_length, padding_side="left",
                                   clean_up_tokenization_spaces=False, **{VIEW_KEY: prompt_view})
    fast.chat_template = qwen3_training_template()
    return fast


def build_tokenizer(config: TinyConfig = TinyConfig()) -> Any:
    texts = list(corpus(config))
    random.Random(config.seed).shuffle(texts)  # order is the only input the seed changes
    return wrap_tokenizer(train_tokenizer(texts, config.vocab_size, config.digit_group), config.max_position_embeddings,
                          config.prompt_view)


def build_model(tokenizer: Any, config: TinyConfig = TinyConfig()) -> Any:
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    model_config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads, head_dim=config.head_dim,
        max_position_embeddings=config.max_position_embeddings, rope_theta=config.rope_theta,
        tie_word_embeddings=True, torch_dtype="float32", **_layer_types(config),
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(config.seed)
    model = Qwen3ForCausalLM(model_config)
    if config.qk_norm_init != 1.0:
        # Qwen3 normalises q and k per head, which caps an attention logit at head_dim ** 0.5
        # times the norm weights squared: too flat, at init, to pick one token out of
        # hundreds, which copying a value needs. The global layers start with larger weights
        # (the local first layer only ever chooses among a few neighbours).
        with torch.no_grad():
            for layer, kind in zip(model.model.layers, model.config.layer_types):
                if kind == "full_attention":
                    layer.self_attn.q_norm.weight.fill_(config.qk_norm_init)
                    layer.self_attn.k_norm.weight.fill_(config.qk_norm_init)
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(END_OF_TEXT)],
        pad_token_id=tokenizer.pad_token_id, do_sample=False)
    return model


def _layer_types(config: TinyConfig) -> dict[str, Any]:
    """A local first layer: its heads can only look a few tokens back, so they become the
    "previous tokens" features that induction (copying a value seen earlier) is built on.
    Left to find that alone, a small model trained on our data had no previous-token head
    after hundreds of steps and copied no id."""
    if not config.local_window:
        return {}
    types = ["sliding_attention"] + ["full_attention"] * (config.num_hidden_layers - 1)
    return {"layer_types": types, "sliding_window": config.local_window, "use_sliding_window": True,
            "max_window_layers": config.num_hidden_layers}


def build_tiny(out_dir: str | os.PathLike[str], config: TinyConfig = TinyConfig(),
               log: Callable[[str], None] | None = None) -> Path:
    """Build the embedded base checkpoint into ``out_dir`` and return its path: the
    tokenizer, the random-init model, then its synthetic pretraining (``pretrain.py``)."""
    import json

    from flywheel_training.pretrain import PretrainConfig, pretrain

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(config)
    model = build_model(tokenizer, config)
    if config.induction_steps or config.recall_steps:
        figures = pretrain(model, tokenizer, PretrainConfig(induction_steps=config.induction_steps,
                                                            recall_steps=config.recall_steps, seed=config.seed),
                           log=log)
        (out / "pretraining.json").write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "tiny_config.json").write_text(_config_json(config))
    return out


def _config_json(config: TinyConfig) -> str:
    import json

    return json.dumps(asdict(config), indent=2, sort_keys=True) + "\n"


def domains_content(domains: Sequence[str] = ()) -> str:
    """Everything of the domain packs that the tokenizer corpus is made from (``domains``, or
    every pack): each pack's declared content (system prompt with its policy, tool schemas,
    slots, template phrasings) and the source of its module and of the modules every pack
    shares (world generators, tools and builders live in code)."""
    import inspect
    import json

    from flywheel_assets.world import domains as package
    from flywheel_assets.world.domains import DOMAINS, base, kit, names

    parts: list[Any] = [inspect.getsource(m) for m in (package, base, kit, names)]
    for name in sorted(domains or DOMAINS):
        d = DOMAINS[name]
        parts.append({"name": d.name, "system_prompt": d.system_prompt(),
                      "tools": [s.openai_schema() for s in d.tool_specs],
                      "slots": {s.name: list(s.synonyms) for s in d.slots},
                      "templates": {t.name: list(t.phrasings) for t in d.templates},
                      "source": inspect.getsource(inspect.getmodule(d.generate_world))})  # type: ignore[arg-type]
    return json.dumps(parts, sort_keys=True)


def config_digest(config: TinyConfig) -> str:
    """12 hex digits that change whenever any field of ``config`` does, or the domain packs
    its tokenizer corpus covers: a changed or added domain must rebuild a base whose
    tokenizer has seen it."""
    import hashlib

    text = _config_json(config) + domains_content(config.domains)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Build the embedded tiny Qwen3 model folder.")
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(build_tiny(args.out_dir, TinyConfig(seed=args.seed), log=print))


if __name__ == "__main__":
    main()
