"""The embedded model and the trainers: tokenizer, base build, checkpoints, SFT, RFT rows, GRPO."""

from __future__ import annotations

import json

import pytest

from flywheel_assets.world.pipeline import RoundConfig, behavior_trees, seed_tasks, task_instances
from flywheel_assets.world.rollout import run_rollouts
from flywheel_assets.world.rubric import score
from flywheel_training.checkpoints import folder_sha256, load_checkpoint, read_meta, verify, write_meta
from flywheel_training.data import successful, to_dataset, trajectory_rows, view_rows
from flywheel_assets.world.teacher import FlakyTeacher
from flywheel_assets.world.teacher import ScriptedTeacher
from flywheel_training.tiny import TinyConfig, build_tiny, build_tokenizer

SMALL = TinyConfig(induction_steps=4, recall_steps=4, vocab_size=1024, corpus_tasks_per_domain=2, hidden_size=64, intermediate_size=128,
                   num_attention_heads=2, num_key_value_heads=1)


@pytest.fixture(scope="module")
def world():
    config = RoundConfig(seed=3, domains=("retail", "banking"), tasks_per_domain=3)
    seed = seed_tasks(config, "r000")
    instances = task_instances(config, "r000", seed, behavior_trees(seed.tasks))
    teacher = run_rollouts(instances, ScriptedTeacher())
    return instances, teacher


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny(tmp_path_factory.mktemp("tiny") / "base", SMALL)


def test_tokenizer_keeps_values_identical_in_prose_and_json():
    tok = build_tokenizer(SMALL)
    for value in ("leo.ali242@example.com", "C895791", "1969-07-22", "W7005252", "12.50"):
        in_prose = tok.tokenize(f"my id it is {value} thanks")
        in_json = tok.tokenize(json.dumps({"x": value}))
        pieces = tok.tokenize(value)
        # The value's pieces appear unchanged in both contexts: copying them is copying tokens.
        assert any(in_prose[i:i + len(pieces)] == pieces for i in range(len(in_prose)))
        assert any(in_json[i:i + len(pieces)] == pieces for i in range(len(in_json)))
    text = 'Hi {"a": "é ü ∑"} <tool_call>\n{}</tool_call><|im_end|>'
    assert tok.decode(tok(text)["input_ids"]) == text  # lossless, no unknown token
    assert len(tok.tokenize("<tool_call>")) == 1 and len(tok.tokenize("<|im_end|>")) == 1


def test_tokenizer_build_is_deterministic():
    a, b = build_tokenizer(SMALL), build_tokenizer(SMALL)
    assert a.get_vocab() == b.get_vocab()


def test_base_build_is_deterministic_and_round_trips(base, tmp_path):
    again = build_tiny(tmp_path / "again", SMALL)
    assert folder_sha256(base) == folder_sha256(again)
    model, tokenizer = load_checkpoint(base)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"


def test_checkpoint_meta_round_trips_with_its_hash(base, tmp_path):
    model, tokenizer = load_checkpoint(base)
    from flywheel_training.checkpoints import save_checkpoint

    meta = save_checkpoint(model, tokenizer, tmp_path / "ck", kind="sft", base_checkpoint=str(base),
                           data_counts={"conversations": 3}, losses=[2.0, 1.0])
    assert read_meta(tmp_path / "ck") == meta
    assert meta.sha256 == folder_sha256(tmp_path / "ck")
    # Saving the same weights again gives the same files and hash, wherever the folder is.
    assert save_checkpoint(model, tokenizer, tmp_path / "ck2", kind="sft").sha256 == meta.sha256
    assert verify(tmp_path / "ck")
    load_checkpoint(tmp_path / "ck", check_hash=True)
    (tmp_path / "ck" / "config.json").write_text((tmp_path / "ck" / "config.json").read_text() + " ")
    assert not verify(tmp_path / "ck")
    with pytest.raises(ValueError, match="does not match"):
        load_checkpoint(tmp_path / "ck", check_hash=True)
    assert write_meta(tmp_path / "ck").sha256 != meta.sha256


def test_rows_keep_arguments_as_strings_and_follow_the_prompt_view(world, base):
    instances, teacher = world
    rows = trajectory_rows(teacher, instances)
    dataset = to_dataset(rows)
    for row in dataset:
        for m in row["messages"]:
            for call in m["tool_calls"] or []:
                assert isinstance(call["function"]["arguments"], str)
                json.loads(call["function"]["arguments"])
        assert isinstance(json.loads(row["tools"]), list)
    _, tokenizer = load_checkpoint(base)
    viewed = view_rows(rows, tokenizer)
    assert len(viewed[0]["messages"][0]["content"]) < len(rows[0]["messages"][0]["content"])
    assert "description" not in viewed[0]["tools"]


def test_sft_few_steps_loss_falls(world, base, tmp_path, capsys):
    from flywheel_training.sft import SFTRunConfig, train_sft

    instances, teacher = world
    logs: list[dict] = []
    result = train_sft(base, trajectory_rows(teacher[:12], instances), tmp_path / "sft",
                       SFTRunConfig(max_steps=24, per_device_train_batch_size=2, logging_steps=4, learning_rate=3e-3),
                       progress=logs.append)
    assert result.steps == 24
    assert [log["step"] for log in logs if "loss" in log] == [4, 8, 12, 16, 20, 24]
    assert "'loss'" not in capsys.readouterr().out  # with a progress callback, logs are not printed as well
    assert result.losses[-1] < result.losses[0] - 0.5
    assert (tmp_path / "sft" / "model.safetensors").exists()
    assert not any(p.name.startswith("checkpoint") for p in (tmp_path / "sft").iterdir())
    load_checkpoint(tmp_path / "sft")


def test_sft_tokenises_only_the_rows_its_planned_steps_draw(world, base, tmp_path):
    from flywheel_training.sft import SFTRunConfig, train_sft

    instances, teacher = world
    rows = trajectory_rows(teacher[:12], instances)
    drawn = to_dataset(rows, seed=3, limit=5)
    assert len(drawn) == 5 and len({json.dumps(m, sort_keys=True) for m in drawn["messages"]}) == 5
    assert to_dataset(rows, seed=3, limit=5)["messages"] == drawn["messages"]  # the same seed draws the same rows
    by_steps = train_sft(base, rows, tmp_path / "steps",
                         SFTRunConfig(max_steps=3, per_device_train_batch_size=2, id_augment=3, logging_steps=1))
    assert (by_steps.steps, by_steps.examples) == (3, 6)  # 6 of the 48 rows (12 and 3 renamed copies each)
    by_epoch = train_sft(base, rows, tmp_path / "epoch",
                         SFTRunConfig(num_train_epochs=1, per_device_train_batch_size=4, logging_steps=1))
    assert (by_epoch.steps, by_epoch.examples) == (3, 12)  # an epoch plan trains on every row


def test_successful_keeps_distinct_successes_of_one_policy(world):
    instances, _ = world
    trajectories = run_rollouts(instances, FlakyTeacher(0.5), samples=2)
    by_id = {i.instance_id: i for i in instances}
    scores = [score(by_id[t.instance_id], t) for t in trajectories]
    kept = successful(trajectories, scores, policy=trajectories[0].policy)
    wins = {s.trajectory_id for s in scores if s.success}
    assert kept and all(t.trajectory_id in wins for t in kept)
    assert len(kept) < len(wins)  # identical samples of one instance are kept once
    assert successful(trajectories, scores, policy="someone-else") == []


def test_grpo_runs_on_mock_world_episodes_and_reports_groups(world, base, tmp_path):
    from flywheel_training.grpo import GRPORunConfig, train_grpo

    instances, _ = world
    config = GRPORunConfig(max_steps=2, prompts_per_step=2, num_generations=2, max_turns=3, max_new_tokens=16)
    result = train_grpo(base, instances[:4], tmp_path / "grpo", config)
    assert result.steps == 2 and result.episodes == 8
    assert len(result.groups) == 4 and all(len(g.rewards) == 2 for g in result.groups)
    load_checkpoint(tmp_path / "grpo")


def test_grpo_replay_trains_on_played_groups(world, base, tmp_path):
    from flywheel_training.grpo import GRPORunConfig, episode_tensors, train_grpo
    from flywheel_training.data import tools_for

    instances, _ = world
    played = run_rollouts(instances[:4], FlakyTeacher(0.5), samples=2)
    by_id = {i.instance_id: i for i in instances}
    replay = [(t, score(by_id[t.instance_id], t)) for t in played]
    result = train_grpo(base, instances[:4], tmp_path / "replay", GRPORunConfig(max_steps=5, prompts_per_step=2,
                                                                                num_generations=2), replay=replay)
    assert result.steps == 2  # one pass over 4 groups, 2 per step
    assert sorted(r for g in result.groups for r in g.rewards) == sorted(s.reward for _, s in replay)
    # saturated groups, counted from the played episodes themselves: both rollouts scored alike
    rewards_by_instance: dict[str, list[float]] = {}
    for trajectory, result_score in replay:
        rewards_by_instance.setdefault(trajectory.instance_id, []).append(result_score.reward)
    alike = sum(1 for rewards in rewards_by_instance.values() if rewards[0] == rewards[1])
    assert result.saturated_groups == alike and 0 < alike < 4  # FlakyTeacher(0.5) gives both kinds of group
    # The mask covers the agent's turns only.
    _, tokenizer = load_checkpoint(base)
    prompt, completion, mask = episode_tensors(tokenizer, played[0].messages, tools_for(instances[0].domain), 4096)
    text = tokenizer.decode([t for t, m in zip(completion, mask) if m])
    assert "<tool_call>" in text or "tell me" in text
    assert "<tool_response>" not in text and "###STOP###" not in text
    assert completion[-1] == tokenizer.eos_token_id


def test_a_later_round_runs_grpo_on_its_own_groups_before_rft(world, base, tmp_path):
    from flywheel_training.config import TrainingConfig
    from flywheel_training.plan import plan_round
    from flywheel_training.rounds import train_round

    instances, teacher = world
    played = run_rollouts(instances[:6], FlakyTeacher(0.5, seed=2), samples=2)
    by_id = {i.instance_id: i for i in instances}
    trajectories = played + teacher[:6]
    scores = [score(by_id[t.instance_id], t) for t in trajectories]
    config = TrainingConfig(rft_steps=2, grpo_steps=1, batch_size=1, id_augment=0, grpo_learning_rate=1e-4)
    meta = train_round(plan_round("r001", previous_round="r000", config=config), base, tmp_path / "r001",
                       instances=instances[:6], trajectories=trajectories, scores=scores, hard_samples=instances[6:8],
                       policy_name=played[0].policy, config=config)
    assert meta.kind == "grpo+rft"
    assert meta.metrics["grpo"]["steps"] == 1 and meta.metrics["rft"]["steps"] == 2
    assert meta.metrics["grpo"]["config"]["learning_rate"] == meta.plan["stages"][0]["learning_rate"] == 1e-4
    assert meta.data_counts["policy_successes"] > 0 and meta.data_counts["hard_sample_solutions"] == 2
    assert meta.data_counts["grpo_groups"] == meta.rewards["groups"] == 4  # one step: 4 prompts x 2 replayed rollouts
    assert not [p.name for p in tmp_path.iterdir() if p.name != "r001"]  # no stage folder left behind
    load_checkpoint(tmp_path / "r001")


def test_sft_stops_at_its_time_budget(world, base, tmp_path):
    from flywheel_training.sft import SFTRunConfig, train_sft

    instances, teacher = world
    result = train_sft(base, trajectory_rows(teacher[:8], instances), tmp_path / "budget",
                       SFTRunConfig(max_steps=100_000, per_device_train_batch_size=1, logging_steps=1, max_seconds=4))
    assert result.stopped_by_budget and 0 < result.steps < 100_000
    load_checkpoint(tmp_path / "budget")  # stopped early, saved whole


def test_randomized_ids_keep_every_conversation_consistent(world):
    import random
    import re

    from flywheel_training.data import augment_ids, randomize_ids

    instances, teacher = world
    rng = random.Random(0)
    for t in teacher:
        new = randomize_ids(t.messages, rng)
        assert [m["role"] for m in new] == [m["role"] for m in t.messages]
        changed = False
        for i, (a, b) in enumerate(zip(t.messages, new)):
            for ca, cb in zip(a.get("tool_calls") or [], b.get("tool_calls") or []):
                assert ca["function"]["name"] == cb["function"]["name"]
                old_args, new_args = json.loads(ca["function"]["arguments"]), json.loads(cb["function"]["arguments"])
                assert old_args.keys() == new_args.keys()
                earlier_old = " ".join(m.get("content") or "" for m in t.messages[:i])
                earlier_new = " ".join(m.get("content") or "" for m in new[:i])
                for key in old_args:
                    # A value the teacher copied from the conversation is still there to copy.
                    assert (str(old_args[key]) in earlier_old) == (str(new_args[key]) in earlier_new)
                    changed |= old_args[key] != new_args[key]
        amounts = lambda ms: re.findall(r"\d+\.\d\d", " ".join(m.get("content") or "" for m in ms))  # noqa: E731
        assert amounts(new) == amounts(t.messages)  # amounts are compared by rules: never renamed
        if any(m.get("tool_calls") for m in t.messages):
            assert changed
    rows = trajectory_rows(teacher[:3], instances)
    assert len(augment_ids(rows, 2)) == 9


def test_rft_data_adds_the_teachers_solutions_of_what_the_policy_failed(world):
    from flywheel_training.rft import rft_data

    instances, teacher = world
    flaky = run_rollouts(instances, FlakyTeacher(0.5))
    trajectories = flaky + teacher
    by_id = {i.instance_id: i for i in instances}
    scores = [score(by_id[t.instance_id], t) for t in trajectories]
    failed = {s.instance_id for s, t in zip(scores, trajectories) if t.policy == flaky[0].policy and not s.success}
    assert 0 < len(failed) < len(instances)
    plain = rft_data(instances, trajectories, scores, policy_name=flaky[0].policy)
    mixed = rft_data(instances, trajectories, scores, policy_name=flaky[0].policy, teacher_name=teacher[0].policy)
    assert plain.counts["teacher_fixes"] == 0 and mixed.counts["teacher_fixes"] == len(failed)
    assert mixed.counts["teacher_fixes_of_failures"] == len(failed)
    assert len(mixed.rows) == len(plain.rows) + len(failed)
    # Weighed up: each teacher solution enters the rows that many times, nothing else changes.
    tripled = rft_data(instances, trajectories, scores, policy_name=flaky[0].policy, teacher_name=teacher[0].policy,
                       fix_copies=3)
    assert tripled.counts == {**mixed.counts, "rows": len(plain.rows) + 3 * len(failed)}
    as_text = lambda rows: sorted(json.dumps(r, sort_keys=True) for r in rows)  # noqa: E731
    fix_rows = [r for r in mixed.rows if r not in plain.rows]
    assert as_text(tripled.rows) == as_text(plain.rows + fix_rows * 3)
    # The uniform-all control: as many of the teacher's solutions, of a seeded uniform draw.
    def uniform(seed: str) -> set[str]:
        data = rft_data(instances, trajectories, scores, policy_name=flaky[0].policy, teacher_name=teacher[0].policy,
                        uniform_fixes_seed=seed)
        assert data.counts["teacher_fixes"] == len(failed) and len(data.rows) == len(mixed.rows)
        of_failures.append(data.counts["teacher_fixes_of_failures"])
        return {json.dumps(r["messages"]) for r in data.rows[len(plain.rows):]}

    of_failures: list[int] = []
    draws = [uniform(f"0/r001/{n}") for n in range(8)]
    assert uniform("0/r001/0") == draws[0]
    fixed = {json.dumps(r["messages"]) for r in mixed.rows[len(plain.rows):]}
    assert any(drawn != fixed for drawn in draws)  # passed instances get drawn too
    assert all(n <= len(failed) for n in of_failures) and min(of_failures) < len(failed)  # and counted


def two_flaky_rollouts_each(world):
    """The world's instances played twice each by a policy that solves half, beside the teacher:
    (instances, teacher, flaky, trajectories, scores, each instance's set of policy outcomes)."""
    instances, teacher = world
    flaky = run_rollouts(instances, FlakyTeacher(0.5), samples=2)
    trajectories = flaky + teacher
    by_id = {i.instance_id: i for i in instances}
    scores = [score(by_id[t.instance_id], t) for t in trajectories]
    outcomes: dict[str, set[bool]] = {}
    for t, s in zip(trajectories, scores):
        if t.policy == flaky[0].policy:
            outcomes.setdefault(t.instance_id, set()).add(s.success)
    return instances, teacher, flaky, trajectories, scores, outcomes


def test_rft_data_can_keep_the_teachers_solutions_to_what_the_policy_failed_on_every_rollout(world):
    from flywheel_training.rft import rft_data

    instances, teacher, flaky, trajectories, scores, outcomes = two_flaky_rollouts_each(world)
    every = {i for i, seen in outcomes.items() if seen == {False}}
    some = {i for i, seen in outcomes.items() if False in seen}
    assert 0 < len(every) < len(some)  # some instances were failed once and solved once

    kwargs = dict(policy_name=flaky[0].policy, teacher_name=teacher[0].policy)
    broad = rft_data(instances, trajectories, scores, **kwargs)
    sharp = rft_data(instances, trajectories, scores, fixes_for="every_rollout_failed", **kwargs)
    assert broad.counts["teacher_fixes"] == len(some)
    assert sharp.counts["teacher_fixes"] == sharp.counts["teacher_fixes_of_failures"] == len(every)
    assert sharp.counts["policy_successes"] == broad.counts["policy_successes"]
    assert len(broad.rows) - len(sharp.rows) == len(some) - len(every)
    # the uniform-all control draws as many as the sharper aim keeps
    drawn = rft_data(instances, trajectories, scores, fixes_for="every_rollout_failed", uniform_fixes_seed="0/r001/x",
                     **kwargs)
    assert drawn.counts["teacher_fixes"] == len(every) and len(drawn.rows) == len(sharp.rows)
    with pytest.raises(ValueError, match="fixes_for must be one of any_failure, every_rollout_failed"):
        rft_data(instances, trajectories, scores, fixes_for="some", **kwargs)


def test_rft_data_can_weigh_the_teachers_solutions_of_every_instance_towards_every_rollout_failures(world):
    from flywheel_training.rft import rft_data

    instances, teacher, flaky, trajectories, scores, outcomes = two_flaky_rollouts_each(world)
    every = {i for i, seen in outcomes.items() if seen == {False}}
    solved = {t.instance_id for t, s in zip(trajectories, scores) if t.policy == teacher[0].policy and s.success}
    assert 0 < len(every) < len(solved) == len(instances)

    kwargs = dict(policy_name=flaky[0].policy, teacher_name=teacher[0].policy)
    plain = rft_data(instances, trajectories, scores, policy_name=flaky[0].policy)
    weighted = rft_data(instances, trajectories, scores, fixes_for="every_instance_weighted", **kwargs)
    assert weighted.counts["teacher_fixes"] == len(solved) + len(every)
    assert weighted.counts["teacher_fixes_of_failures"] == 2 * len(every)
    assert len(weighted.rows) == len(plain.rows) + len(solved) + len(every)
    # each every-rollout failure's solution enters twice, every other instance's once
    seen: dict[str, int] = {}
    for row in weighted.rows[len(plain.rows):]:
        text = json.dumps(row["messages"])
        seen[text] = seen.get(text, 0) + 1
    assert sorted(seen.values()) == sorted([2] * len(every) + [1] * (len(solved) - len(every)))
    # the uniform-all control weighs as many, drawn uniformly, twice: the same volume
    drawn = rft_data(instances, trajectories, scores, fixes_for="every_instance_weighted",
                     uniform_fixes_seed="0/r001/x", **kwargs)
    assert drawn.counts["teacher_fixes"] == weighted.counts["teacher_fixes"] and len(drawn.rows) == len(weighted.rows)
    assert drawn.counts["teacher_fixes_of_failures"] < weighted.counts["teacher_fixes_of_failures"]


def test_the_base_size_settings_build_a_base_of_that_size_beside_the_default(tmp_path):
    from flywheel_assets.resources import TrainingResource
    from flywheel_training.tiny import config_digest

    assert TrainingResource().base_config() == TinyConfig()  # the defaults are the embedded model's
    training = TrainingResource(checkpoint_dir=str(tmp_path), base_hidden_size=64, base_layers=3,
                                base_induction_steps=0, base_recall_steps=0)
    path = training.base()
    assert path.name == f"base-{config_digest(training.base_config())}" != f"base-{config_digest(TinyConfig())}"
    model, _ = load_checkpoint(path)
    assert (model.config.hidden_size, model.config.intermediate_size, model.config.num_hidden_layers) == (64, 192, 3)
    assert model.config.layer_types == ["sliding_attention", "full_attention", "full_attention"]


def test_a_pretrained_base_refuses_the_embedded_base_size_settings_instead_of_ignoring_them(tmp_path):
    from flywheel_assets.resources import TrainingResource
    from flywheel_assets.world.settings import SettingsError

    training = TrainingResource(checkpoint_dir=str(tmp_path), base_model="smollm2", base_hidden_size=256)
    with pytest.raises(SettingsError, match=r"training.base_hidden_size \(FLYWHEEL_BASE_HIDDEN_SIZE"):
        training.settings()
    with pytest.raises(SettingsError, match="base_model"):
        training.base()
    assert not any(tmp_path.iterdir())  # nothing converted
