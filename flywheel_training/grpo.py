"""GRPO on the rubric reward with TRL's ``GRPOTrainer``, episodes driven by our rollout runner.

Why not TRL's own multi-turn loop (``tools=[...]`` / ``environment_factory``): it continues a
completion only through tool calls, and ends the episode at the first message without one.
A Mock World episode also needs the mock user (the agent asks, the user reveals hidden
facts, the user says when it is done), the task-level consistency cache and the rubric
over the whole episode. So generation goes through TRL's documented ``rollout_func`` hook:
for each batch it plays the Mock World episodes with ``run_rollouts`` (the model being
trained, batched, sampling), scores them with the rubric, and hands TRL, per episode, the
prompt ids, the rest of the conversation as the completion, and an ``env_mask`` that
zeroes the tokens the environment wrote (user replies, tool results) so only the agent's
tokens get the policy gradient. The rubric reward reaches TRL as an extra rollout field
that the reward function returns.

The loss is on the canonical rendering of each assistant message (what the model will
see of it in later turns), not on the raw sampled tokens; they differ only when the
model wrote something ``parse_assistant`` had to normalise.

Groups: TRL repeats each prompt ``num_generations`` times; the rewards of one instance's
rollouts form its group. Groups where every rollout got the same reward give no
advantage, hence no gradient; they are counted and reported (``saturated_groups``).

``replay`` mode trains on rollouts that were already played (the round's own rollouts of
this same checkpoint): no generation at all, each group used once.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flywheel_assets.world.rollout import run_rollouts
from flywheel_assets.world.rubric import score
from flywheel_assets.world.tasks import Score, TaskInstance, Trajectory
from flywheel_training.chat import apply_view, arguments_as_json_strings, prompt_view
from flywheel_training.data import clean_messages, tools_for

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is the documented hook; no banner per run

ID_KEY = "instance_id"
"""Carried on the first prompt message: the template ignores it, and it tells the rollout
function which Mock World instance a prompt belongs to (openings are not unique)."""


@dataclass
class GRPORunConfig:
    learning_rate: float = 3e-4
    max_steps: int = 20
    prompts_per_step: int = 4
    num_generations: int = 4
    max_turns: int = 12
    max_new_tokens: int = 96
    max_completion_tokens: int = 2048  # longer episodes are cut (the cut part gets no gradient)
    temperature: float = 1.0
    beta: float = 0.0  # no reference model: the KL term costs a second model for little gain here
    scale_rewards: str = "group"
    seed: int = 0
    max_seconds: float | None = None
    bf16: bool = False
    gradient_checkpointing: bool = False
    dtype: str = "float32"
    threads: int | None = None
    logging_steps: int = 1
    extra: dict[str, Any] = field(default_factory=dict)  # further GRPOConfig fields


@dataclass
class GroupStat:
    instance_id: str
    rewards: list[float]
    mean: float
    variance: float
    saturated: bool  # every rollout got the same reward: no learning signal


@dataclass
class GRPOResult:
    output_dir: str
    steps: int
    seconds: float
    episodes: int
    losses: list[float]
    reward_means: list[float]
    groups: list[GroupStat]
    saturated_groups: int
    config: dict[str, Any]
    stopped_by_budget: bool = False  # the wall-clock safety cap ended it before its steps

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def group_stats(instance_id: str, rewards: Sequence[float]) -> GroupStat:
    variance = statistics.pvariance(rewards) if len(rewards) > 1 else 0.0
    return GroupStat(instance_id, [float(r) for r in rewards], float(statistics.fmean(rewards)), float(variance),
                     saturated=len(set(rewards)) <= 1)


def prompt_rows(instances: Sequence[TaskInstance]) -> list[dict[str, Any]]:
    """One row per instance: the opening messages (system + user), tagged with the instance id."""
    from flywheel_assets.world.domains import get_domain
    from flywheel_assets.world.users import ProceduralUser

    rows = []
    for inst in instances:
        domain = get_domain(inst.domain)
        opening = [{"role": "system", "content": domain.system_prompt(), ID_KEY: inst.instance_id},
                   {"role": "user", "content": ProceduralUser(inst, domain).opening(), ID_KEY: None}]
        rows.append({"prompt": opening})
    return rows


def episode_tensors(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                    max_completion_tokens: int) -> tuple[list[int], list[int], list[int]]:
    """(prompt ids, completion ids, env mask) of one played episode, as the model sees it.

    The prompt is the system prompt and the user's opening; the completion is everything
    after it, with mask 1 on assistant tokens (the template's generation markers) and 0 on
    what the environment wrote.
    """
    viewed, viewed_tools = apply_view(arguments_as_json_strings(clean_messages(messages)), tools,
                                      prompt_view(tokenizer))
    full = tokenizer.apply_chat_template(viewed, tools=viewed_tools, tokenize=True, return_dict=True,
                                         return_assistant_tokens_mask=True)
    ids, mask = list(full["input_ids"]), list(full["assistant_masks"])
    first_agent = next((i for i, m in enumerate(viewed) if m["role"] == "assistant"), len(viewed))
    prompt = tokenizer.apply_chat_template(viewed[:first_agent], tools=viewed_tools, tokenize=True,
                                           return_dict=True)["input_ids"]
    cut = len(prompt) if ids[:len(prompt)] == list(prompt) else next(i for i, m in enumerate(mask) if m)
    completion, env_mask = ids[cut:], mask[cut:]
    # The rendering ends "<|im_end|>\n": drop the newline so TRL sees a completion that ended.
    if completion and completion[-1] != tokenizer.eos_token_id and tokenizer.eos_token_id in completion[-2:]:
        completion, env_mask = completion[:-1], env_mask[:-1]
    return ids[:cut], completion[:max_completion_tokens], env_mask[:max_completion_tokens]


class MockWorldRollouts:
    """The ``rollout_func`` for TRL: plays (or replays) Mock World episodes for a batch."""

    def __init__(self, instances: Sequence[TaskInstance], tokenizer: Any, config: GRPORunConfig,
                 replay: dict[str, list[tuple[Trajectory, Score]]] | None = None,
                 progress: Callable[[dict[str, Any]], None] | None = None):
        self.instances = {i.instance_id: i for i in instances}
        self.tokenizer = tokenizer
        self.config = config
        self.replay = replay
        self.progress = progress
        self.groups: list[GroupStat] = []
        self.episodes = 0
        self.calls = 0

    def __call__(self, prompts: list[list[dict[str, Any]]], trainer: Any) -> dict[str, Any]:
        ids = [p[0].get(ID_KEY) for p in prompts]
        order = list(dict.fromkeys(ids))  # distinct instances, in batch order
        wanted = {i: ids.count(i) for i in order}
        played = self._replayed(order, wanted) if self.replay is not None else self._play(order, wanted, trainer)
        out: dict[str, list[Any]] = {"prompt_ids": [], "completion_ids": [], "env_mask": [], "rubric_reward": []}
        rewards_by_instance: dict[str, list[float]] = defaultdict(list)
        for instance_id in ids:
            trajectory, result = played[instance_id].pop(0)
            inst = self.instances[instance_id]
            prompt_ids, completion_ids, env_mask = episode_tensors(
                self.tokenizer, trajectory.messages, tools_for(inst.domain), self.config.max_completion_tokens)
            out["prompt_ids"].append(prompt_ids)
            out["completion_ids"].append(completion_ids)
            out["env_mask"].append(env_mask)
            out["rubric_reward"].append(float(result.reward))
            rewards_by_instance[instance_id].append(float(result.reward))
        batch_groups = [group_stats(i, rewards_by_instance[i]) for i in order]
        self.groups += batch_groups
        self.episodes += len(ids)
        self.calls += 1
        if self.progress:
            self.progress({"grpo_batch": self.calls, "episodes": len(ids),
                           "reward_mean": statistics.fmean(out["rubric_reward"]),
                           "saturated_groups": sum(g.saturated for g in batch_groups), "groups": len(batch_groups)})
        return {**out, "logprobs": None}

    def _play(self, order: list[str], wanted: dict[str, int], trainer: Any) -> dict[str, list[tuple[Trajectory, Score]]]:
        from flywheel_training.policies.local import GenerationSettings, LocalTransformersPolicy

        settings = GenerationSettings(max_new_tokens=self.config.max_new_tokens, temperature=self.config.temperature,
                                      seed=self.config.seed * 100_003 + self.calls)
        model = trainer.accelerator.unwrap_model(trainer.model)
        policy = LocalTransformersPolicy.from_model(model, self.tokenizer, name="grpo", settings=settings)
        played: dict[str, list[tuple[Trajectory, Score]]] = {}
        # run_rollouts plays `samples` per instance; batches ask for the same count per instance.
        for count in sorted(set(wanted.values())):
            group = [self.instances[i] for i in order if wanted[i] == count]
            for t in run_rollouts(group, policy, samples=count, max_turns=self.config.max_turns):
                played.setdefault(t.instance_id, []).append((t, score(self.instances[t.instance_id], t)))
        return played

    def _replayed(self, order: list[str], wanted: dict[str, int]) -> dict[str, list[tuple[Trajectory, Score]]]:
        assert self.replay is not None
        return {i: [self.replay[i][k % len(self.replay[i])] for k in range(wanted[i])] for i in order}


def rubric_reward(prompts: Any = None, completions: Any = None, rubric_reward: Sequence[float] = (),
                  **kwargs: Any) -> list[float]:
    """TRL reward function: the rubric reward the rollout function already computed."""
    return [float(r) for r in rubric_reward]


def train_grpo(
    model_path: str | os.PathLike[str],
    instances: Sequence[TaskInstance],
    output_dir: str | os.PathLike[str],
    config: GRPORunConfig | None = None,
    *,
    replay: Sequence[tuple[Trajectory, Score]] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> GRPOResult:
    """GRPO from the checkpoint at ``model_path`` on ``instances``; saves to ``output_dir``.

    With ``replay`` (played trajectories and their scores), trains on those groups instead
    of generating: instances without at least two replayed rollouts are left out.
    """
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from flywheel_training.sft import _budget_callback, load_for_training, report_progress

    config = config or GRPORunConfig()
    if config.threads:
        torch.set_num_threads(config.threads)
    model, tokenizer = load_for_training(model_path, config.dtype)
    tokenizer.padding_side = "left"
    grouped: dict[str, list[tuple[Trajectory, Score]]] | None = None
    if replay is not None:
        grouped = defaultdict(list)
        for trajectory, result in replay:
            grouped[trajectory.instance_id].append((trajectory, result))
        instances = [i for i in instances if len(grouped.get(i.instance_id, [])) >= 2]
        config = GRPORunConfig(**{**asdict(config), "num_generations": min(
            [config.num_generations] + [len(grouped[i.instance_id]) for i in instances])})
        # One pass over the replayed groups: they were played by this checkpoint, later steps drift off-policy.
        config.max_steps = max(1, min(config.max_steps, len(instances) // config.prompts_per_step))
    if not instances:
        raise ValueError("GRPO needs instances (with at least two replayed rollouts each in replay mode)")
    rollouts = MockWorldRollouts(instances, tokenizer, config, replay=grouped, progress=progress)
    scratch = tempfile.TemporaryDirectory(prefix="flywheel-grpo-")
    args = GRPOConfig(
        output_dir=scratch.name, learning_rate=config.learning_rate, max_steps=config.max_steps,
        per_device_train_batch_size=config.prompts_per_step * config.num_generations,
        gradient_accumulation_steps=1, steps_per_generation=1, num_iterations=1,
        num_generations=config.num_generations, max_completion_length=config.max_completion_tokens,
        temperature=config.temperature, beta=config.beta, scale_rewards=config.scale_rewards,
        seed=config.seed, data_seed=config.seed, bf16=config.bf16,
        gradient_checkpointing=config.gradient_checkpointing, logging_steps=config.logging_steps,
        save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False, **config.extra,
    )
    budget = _budget_callback(config.max_seconds)
    trainer = GRPOTrainer(model=model, reward_funcs=[rubric_reward], args=args,
                          train_dataset=Dataset.from_list(prompt_rows(instances)), processing_class=tokenizer,
                          rollout_func=rollouts, callbacks=[budget])
    report_progress(trainer, progress)
    started = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - started
    out = Path(output_dir)
    trainer.model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    scratch.cleanup()
    history = trainer.state.log_history
    return GRPOResult(
        output_dir=str(out), steps=int(output.global_step), seconds=round(seconds, 2), episodes=rollouts.episodes,
        losses=[float(h["loss"]) for h in history if "loss" in h],
        reward_means=[float(h["reward"]) for h in history if "reward" in h],
        groups=rollouts.groups, saturated_groups=sum(g.saturated for g in rollouts.groups), config=asdict(config),
        stopped_by_budget=budget.hit,
    )
