"""Trajectories into TRL datasets.

One row per conversation: ``messages`` (OpenAI format, tool-call arguments as JSON strings)
and ``tools`` (the domain's tool schemas as one JSON string, which TRL's SFT trainer
decodes). Both are strings on purpose: Arrow merges the structs of different rows, so
argument dicts of different tools, or schemas of different tools, would come back with
``null`` keys that the template would render.
"""

from __future__ import annotations

import functools
import json
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from flywheel_assets.world.domains import DOMAINS, get_domain
from flywheel_assets.world.tasks import Score, TaskInstance, Trajectory
from flywheel_training.chat import apply_view, arguments_as_json_strings, prompt_view

MESSAGE_KEYS = ("role", "content", "tool_calls", "tool_call_id", "name")


def tools_for(domain: str) -> list[dict[str, Any]]:
    return [s.openai_schema() for s in get_domain(domain).tool_specs]


def clean_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages with the same keys in every row (Arrow needs one schema) and string arguments."""
    out = []
    for m in arguments_as_json_strings(list(messages)):
        row = {k: m.get(k) for k in MESSAGE_KEYS}
        if row["content"] is not None and not isinstance(row["content"], str):
            row["content"] = json.dumps(row["content"])
        row["tool_calls"] = row["tool_calls"] or None
        out.append(row)
    return out


def conversation_row(messages: Sequence[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
    return {"messages": clean_messages(messages), "tools": json.dumps(tools, ensure_ascii=False)}


def trajectory_rows(trajectories: Iterable[Trajectory], instances: Iterable[TaskInstance]) -> list[dict[str, Any]]:
    """Rows for SFT, one per trajectory, with the tools of its instance's domain."""
    domain_of = {i.instance_id: i.domain for i in instances}
    tools: dict[str, list[dict[str, Any]]] = {}
    rows = []
    for t in trajectories:
        domain = domain_of[t.instance_id]
        if domain not in tools:
            tools[domain] = tools_for(domain)
        rows.append(conversation_row(t.messages, tools[domain]))
    return rows


def successful(trajectories: Iterable[Trajectory], scores: Iterable[Score], *, policy: str | None = None,
               min_reward: float | None = None) -> list[Trajectory]:
    """Trajectories that succeeded (or reached ``min_reward``), optionally of one policy;
    one per distinct conversation, since identical samples add weight but no information."""
    by_id = {s.trajectory_id: s for s in scores}
    seen: set[str] = set()
    kept = []
    for t in trajectories:
        s = by_id.get(t.trajectory_id)
        if s is None or (policy is not None and t.policy != policy):
            continue
        if not (s.success if min_reward is None else s.reward >= min_reward):
            continue
        key = json.dumps(clean_messages(t.messages), sort_keys=True)
        if key not in seen:
            seen.add(key)
            kept.append(t)
    return kept


def view_rows(rows: Sequence[dict[str, Any]], tokenizer: Any) -> list[dict[str, Any]]:
    """Rows as the model behind ``tokenizer`` sees prompts (``chat.prompt_view``): training
    must show the model exactly what the policy will show it at generation time."""
    view = prompt_view(tokenizer)
    if view == "full":
        return list(rows)
    out = []
    for row in rows:
        messages, tools = apply_view(row["messages"], json.loads(row["tools"]), view)
        out.append({**row, "messages": messages, "tools": json.dumps(tools, ensure_ascii=False)})
    return out


@functools.cache
def id_patterns() -> tuple[tuple[re.Pattern[str], str], ...]:
    """Where identifiers stand in text, as the domain packs declare them (``Domain.id_patterns``):
    (compiled regex, "digits" or "date"), each pattern once, over every pack (a conversation
    does not say which domain it is from, and one pack's pattern never matches another's amounts)."""
    kinds: dict[str, str] = {}
    for name in sorted(DOMAINS):
        for pattern in DOMAINS[name].id_patterns:
            kinds.setdefault(pattern.regex, pattern.kind)
    return tuple((re.compile(regex), kind) for regex, kind in kinds.items())


def _strings(messages: Sequence[dict[str, Any]]) -> Iterator[str]:
    for m in messages:
        if isinstance(m.get("content"), str):
            yield m["content"]
        for call in m.get("tool_calls") or []:
            yield str((call.get("function") or {}).get("arguments") or "")


def _map_strings(messages: Sequence[dict[str, Any]], fn: Any) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        m = dict(m)
        if isinstance(m.get("content"), str):
            m["content"] = fn(m["content"])
        if m.get("tool_calls"):
            m["tool_calls"] = [{**c, "function": {**c["function"], "arguments": fn(c["function"]["arguments"])}}
                               for c in m["tool_calls"]]
        out.append(m)
    return out


def randomize_ids(messages: Sequence[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """The same conversation with the digits of every identifier (ids, email numbers, card
    numbers; where they stand is declared by the domain packs, see ``id_patterns``) replaced
    consistently by fresh random digits.

    Identifiers are opaque: the teacher's behaviour on the renamed conversation is just as
    right. It is what teaches a small model to copy ids instead of memorising them: without
    it the embedded model learned the ids of its few hundred training conversations by
    heart (training loss near zero) and copied almost none on held-out tasks. Amounts,
    dates and counts, which rules compare, are left alone.
    """
    messages = [dict(m) for m in messages]
    runs: set[str] = set()
    births: set[str] = set()  # identifiers that are dates (a date of birth): renamed to another date
    for text in _strings(messages):
        for pattern, kind in id_patterns():
            (births if kind == "date" else runs).update(pattern.findall(text))
    if not runs and not births:
        return messages
    taken = runs | births
    mapping: dict[str, str] = {}
    for value in sorted(runs) + sorted(births):
        while True:
            if value in births:
                new = f"{rng.randint(1950, 2003)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            else:
                new = str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(len(value) - 1))
            if new not in taken:
                break
        taken.add(new)
        mapping[value] = new
    runs |= births
    pattern = re.compile(r"(?<![\d.$])(" + "|".join(sorted(map(re.escape, runs), key=len, reverse=True))
                         + r")(?![\d]|[.,]\d)")
    return _map_strings(messages, lambda text: pattern.sub(lambda m: mapping[m.group(1)], text))


def augment_ids(rows: Sequence[dict[str, Any]], copies: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """``rows`` plus ``copies`` renamed variants of each (see ``randomize_ids``)."""
    rng = random.Random(f"augment-ids/{seed}")
    out = list(rows)
    for _ in range(copies):
        out += [{**row, "messages": randomize_ids(row["messages"], rng)} for row in rows]
    return out


def to_dataset(rows: Sequence[dict[str, Any]], *, seed: int = 0, limit: int | None = None) -> Any:
    """A ``datasets.Dataset`` of conversation rows, in a seeded shuffled order; with ``limit``,
    only the first ``limit`` rows of that order (a seeded draw without replacement)."""
    from datasets import Dataset

    if not rows:
        raise ValueError("no training rows: nothing to train on")
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return Dataset.from_list(rows[:limit] if limit else rows)


def prompt_rows(instances: Iterable[TaskInstance], *, repeats: int = 1) -> list[dict[str, Any]]:
    """GRPO prompts: one row per instance (the opening system + user turn), carrying the
    instance id so the reward function can find the environment and rubric."""
    from flywheel_assets.world.rollout import Episode
    from flywheel_assets.world.tools import ProceduralToolBackend, TaskToolCache
    from flywheel_assets.world.users import ProceduralUser

    rows = []
    for inst in instances:
        domain = get_domain(inst.domain)
        episode = Episode(inst, domain, TaskToolCache(ProceduralToolBackend(domain), inst.initial_world).session(),
                          ProceduralUser(inst, domain), max_turns=1)
        for _ in range(repeats):
            rows.append({"prompt": clean_messages(episode.messages), "tools": json.dumps(tools_for(inst.domain)),
                         "instance_id": inst.instance_id})
    return rows
