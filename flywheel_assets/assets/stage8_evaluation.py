"""Stage 8: the round's checkpoint on the fixed held-out Mock World set: pass^1, pass^k
and mean reward, overall, per domain and per phase. Round r000 also evaluates the base
it started from, so the first row of every comparison is "before any task training"."""

import time
from typing import Any

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from flywheel_assets.assets.common import ROUND_GROUP, round_to, write_stage
from flywheel_assets.partitions import rounds_partitions
from flywheel_assets.resources import RoundConfigResource, TrainingResource, WarehouseResource
from flywheel_assets.store.rows import instances_from_rows
from flywheel_assets.store.schema import EVAL_ROUND
from flywheel_assets.world.tasks import TaskInstance
from flywheel_training.evals.heldout import EvalResult, evaluate


@asset(partitions_def=rounds_partitions, group_name=ROUND_GROUP, deps=["policy_checkpoint", "eval_tasks"],
       kinds={"pytorch", "duckdb"})
def evaluation(context: AssetExecutionContext, warehouse: WarehouseResource, training: TrainingResource,
               round_config: RoundConfigResource) -> MaterializeResult:
    """Evaluation: held-out pass^1 / pass^k / mean reward of this round's checkpoint (and,
    in r000, of the base it started from, before any task training)."""
    started = time.perf_counter()
    round_key = context.partition_key
    store = warehouse.warehouse()
    checkpoint = store.read_round("policy_checkpoints", round_key)[0]
    if not store.is_written("eval_tasks", EVAL_ROUND):
        raise ValueError(f"the held-out set is missing from {store.path}: materialise eval_tasks first")
    heldout = instances_from_rows(store.read_round("eval_tasks", EVAL_ROUND))
    k = training.eval_trials
    subjects = [("checkpoint", checkpoint["checkpoint_id"], checkpoint["path"])]
    if checkpoint["base_checkpoint"] is None and training.evaluate_base:  # trained from the built base: show where it started
        subjects.append(("base", checkpoint["base_sha256"], checkpoint["base_path"]))
    rows: list[dict[str, Any]] = []
    figures: dict[str, float | int] = {"k": k}
    tables = {}
    for subject, checkpoint_id, path in subjects:
        context.log.info(f"{round_key}: evaluating the {subject} {path} on {len(heldout)} held-out tasks "
                         f"× {k} trials (temperature {training.eval_temperature})"
                         + (" and once greedily" if training.eval_greedy else ""))
        result = _evaluate(training, path, checkpoint_id, heldout, round_config.round_config().max_turns)
        rows += [{"evaluation_id": f"{checkpoint_id[:16]}:{r['group']}", "checkpoint_id": checkpoint_id,
                  "group_name": r["group"], "tasks": r["tasks"], "trials": k, "pass_1": r["pass^1"],
                  "pass_k": r[f"pass^{k}"], "reward_mean": r["reward_mean"], "row": r, "subject": subject,
                  "pass_1_low": r["pass^1_ci"][0], "pass_1_high": r["pass^1_ci"][1],
                  "pass_k_low": r[f"pass^{k}_ci"][0], "pass_k_high": r[f"pass^{k}_ci"][1],
                  "greedy_pass_1": r.get("greedy"), "greedy_pass_1_low": r.get("greedy_ci", (None, None))[0],
                  "greedy_pass_1_high": r.get("greedy_ci", (None, None))[1]}
                 for r in result.rows]
        figures.update(_figures(result, k, prefix="" if subject == "checkpoint" else f"{subject}."))
        tables[subject] = MetadataValue.md(_markdown(result.rows, k))
    figures["tasks"] = len(heldout)
    return write_stage(context, warehouse, "evaluations", round_key, rows, figures, started,
                       {"table": tables["checkpoint"], **{f"{s}_table": t for s, t in tables.items() if s != "checkpoint"}})


def _evaluate(training: TrainingResource, path: str, checkpoint_id: str, heldout: list[TaskInstance],
              max_turns: int) -> EvalResult:
    name = f"embedded:{checkpoint_id[:12]}"
    policy = training.load_policy(path, name, temperature=training.eval_temperature)
    greedy = training.load_policy(path, name, temperature=0.0) if training.eval_greedy else None
    return evaluate(policy, heldout, trials=training.eval_trials, max_turns=max_turns, greedy_policy=greedy)


def _figures(result: EvalResult, k: int, prefix: str) -> dict[str, float]:
    overall = result.overall()
    greedy = ({f"{prefix}greedy_pass_1": round_to(overall["greedy"]),
               f"{prefix}greedy_pass_1_low": round_to(overall["greedy_ci"][0]),
               f"{prefix}greedy_pass_1_high": round_to(overall["greedy_ci"][1])} if "greedy" in overall else {})
    return {**greedy, f"{prefix}pass_1": round_to(overall["pass^1"]), f"{prefix}pass_k": round_to(overall[f"pass^{k}"]),
            f"{prefix}pass_1_low": round_to(overall["pass^1_ci"][0]),
            f"{prefix}pass_1_high": round_to(overall["pass^1_ci"][1]),
            f"{prefix}reward_mean": round_to(overall["reward_mean"]),
            **{f"{prefix}pass_1.{r['group']}": round_to(r["pass^1"]) for r in result.rows[1:]}}


def _markdown(rows: list[dict], k: int) -> str:
    lines = [f"| group | tasks | pass^1 (95% CI) | pass^{k} | greedy (95% CI) | reward |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['group']} | {r['tasks']} | {r['pass^1']:.3f} [{r['pass^1_ci'][0]:.3f}, {r['pass^1_ci'][1]:.3f}] "
              f"| {r[f'pass^{k}']:.3f} | "
              + (f"{r['greedy']:.3f} [{r['greedy_ci'][0]:.3f}, {r['greedy_ci'][1]:.3f}]" if "greedy" in r else "")
              + f" | {r['reward_mean']:.3f} |" for r in rows]
    return "\n".join(lines)
