"""The LLM judge: a step after predicate scoring, for the rubric items that string
predicates cannot really decide -- the outcome was told to the user correctly (in any
wording), the refusal gave the policy's reason, nothing forbidden was disclosed (in any
wording).

Predicates run first (``rubric.score``); ``judge_score`` then asks the judge about each
such item with structured output (a JSON schema ``response_format``) and records both
verdicts on the item: ``predicate_met`` and ``judge_met``; the judge's verdict is the one
that counts. A verdict that cannot be read (after retries) is recorded as a judge failure:
the item is left out of the reward and the score is flagged ``failed_by="judge"`` -- never
a silent 0. Reward and gate are recomputed with the rule of ``rubric.score``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flywheel_assets.world.llm.client import LLMClient, parse_json_object
from flywheel_assets.world.tasks import ItemResult, RubricItem, Score, TaskInstance, Trajectory

JUDGED_CHECKS = ("informed", "not_mentioned")
CREDITED = ("subgoal", "interaction")  # as in rubric.py: the kinds that earn reward
GATES = ("termination", "prohibited")
TRANSCRIPT_CHARS = 12000

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"met": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["met", "reason"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "verdict", "strict": True, "schema": VERDICT_SCHEMA}}


def transcript(trajectory: Trajectory) -> str:
    lines = []
    for m in trajectory.messages:
        role = m.get("role")
        if role == "system":
            continue
        if role == "tool":
            lines.append(f"[tool result] {m.get('content') or ''}")
            continue
        if m.get("content"):
            lines.append(f"[{'agent' if role == 'assistant' else 'customer'}] {m['content']}")
        for call in m.get("tool_calls") or []:
            function = call.get("function") or {}
            lines.append(f"[agent calls {function.get('name')}] {function.get('arguments')}")
    text = "\n".join(lines)
    return text if len(text) <= TRANSCRIPT_CHARS else "...\n" + text[-TRANSCRIPT_CHARS:]


def question(item: RubricItem) -> str:
    check = item.check
    if check["type"] == "informed" and item.item_id.endswith(":refuse"):
        return ("Did the agent decline the request and tell the customer the policy's reason? The reason involves: "
                f"{check['mentions']}.")
    if check["type"] == "informed":
        return (f"Did the agent correctly tell the customer the outcome ({item.description})? The outcome must "
                f"convey: {check['mentions']} (any wording or format is fine; wrong values are not).")
    return (f"Did the agent avoid disclosing {check['value']!r} to the customer, in any wording? Answer met=true "
            "when nothing of it was disclosed.")


class LLMJudge:
    def __init__(self, client: LLMClient, output_retries: int = 1):
        self.client = client
        self.output_retries = output_retries
        self.concurrency = client.config.concurrency

    def verdict(self, instance: TaskInstance, trajectory: Trajectory, item: RubricItem) -> tuple[bool | None, str]:
        """(met, reason); met is None when no readable verdict came back."""
        messages = [
            {"role": "system", "content": "You grade one criterion of a customer-service conversation. Answer with "
                                          'a JSON object {"met": true|false, "reason": "<one sentence>"} only.'},
            {"role": "user", "content": f"Criterion: {question(item)}\n\nConversation:\n{transcript(trajectory)}"},
        ]
        problem = ""
        for attempt in range(self.output_retries + 1):
            answer = parse_json_object(self.client.complete(messages, response_format=RESPONSE_FORMAT,
                                                            attempt=attempt).content)
            if answer is not None and isinstance(answer.get("met"), bool):
                return answer["met"], str(answer.get("reason") or "")[:500]
            problem = "the verdict is not a JSON object with a boolean met"
        return None, f"judge failure: {problem}"


def judge_score(instance: TaskInstance, trajectory: Trajectory, score: Score, judge: LLMJudge) -> Score:
    """``score`` with the judge's verdicts on the natural-language items."""
    items_by_id = {i.item_id: i for i in instance.rubric.items}
    results = []
    for result in score.items:
        item = items_by_id.get(result.item_id)
        if item is None or item.check.get("type") not in JUDGED_CHECKS:
            results.append(result)
            continue
        met, reason = judge.verdict(instance, trajectory, item)
        results.append(dataclasses.replace(result, met=result.met if met is None else met, predicate_met=result.met,
                                           judge_met=met, judge_detail=reason, judge_failed=met is None))
    return rescore(instance, score, results)


def rescore(instance: TaskInstance, score: Score, results: list[ItemResult]) -> Score:
    """Gate, reward and success from item results, as ``rubric.score`` computes them,
    leaving out items whose judge failed."""
    counted = [r for r in results if not r.judge_failed]
    gate = next((f"{r.item_id}: {r.detail or r.judge_detail}" for r in counted if not r.met and r.kind in GATES),
                None)
    weights = {i.item_id: i.weight for i in instance.rubric.items if i.kind in CREDITED
               and any(r.item_id == i.item_id for r in counted)}
    total = sum(weights.values()) or 1.0
    reward = 0.0 if gate else round(sum(weights.get(r.item_id, 0.0) for r in counted if r.met) / total, 6)
    failed = any(r.judge_failed for r in results)
    return dataclasses.replace(score, items=results, reward=reward, success=all(r.met for r in counted),
                               gate=gate, failed_by="judge" if failed else score.failed_by)


def judge_scores(instances: Mapping[str, TaskInstance] | Sequence[TaskInstance], trajectories: Sequence[Trajectory],
                 scores: Sequence[Score], judge: LLMJudge) -> list[Score]:
    """``judge_score`` for a whole batch, trajectories judged concurrently, in order."""
    by_id = instances if isinstance(instances, Mapping) else {i.instance_id: i for i in instances}
    with ThreadPoolExecutor(max_workers=max(1, judge.concurrency), thread_name_prefix="judge") as pool:
        return list(pool.map(lambda pair: judge_score(by_id[pair[0].instance_id], pair[0], pair[1], judge),
                             zip(trajectories, scores)))
