"""Stage 8: the round's checkpoint on the fixed held-out Mock World set: pass^1, pass^k
and mean reward, overall, per domain and per phase."""

import time

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from flywheel_assets.assets.common import ROUND_GROUP, round_to, write_stage
from flywheel_assets.partitions import rounds_partitions
from flywheel_assets.resources import TrainingResource, WarehouseResource
from flywheel_assets.store.schema import EVAL_ROUND
from flywheel_assets.store.rows import instances_from_rows
from flywheel_training.evals.heldout import evaluate


@asset(partitions_def=rounds_partitions, group_name=ROUND_GROUP, deps=["policy_checkpoint", "eval_tasks"],
       kinds={"pytorch", "duckdb"})
def evaluation(context: AssetExecutionContext, warehouse: WarehouseResource,
               training: TrainingResource) -> MaterializeResult:
    """Evaluation: held-out pass^1 / pass^k / mean reward of this round's checkpoint."""
    started = time.perf_counter()
    round_key = context.partition_key
    store = warehouse.warehouse()
    checkpoint = store.read_round("policy_checkpoints", round_key)[0]
    if not store.is_written("eval_tasks", EVAL_ROUND):
        raise ValueError(f"the held-out set is missing from {store.path}: materialise eval_tasks first")
    heldout = instances_from_rows(store.read_round("eval_tasks", EVAL_ROUND))
    policy = training.load_policy(checkpoint["path"], f"embedded:{checkpoint['checkpoint_id'][:12]}")
    context.log.info(f"{round_key}: evaluating {checkpoint['path']} on {len(heldout)} held-out tasks "
                     f"× {training.eval_trials} trials")
    result = evaluate(policy, heldout, trials=training.eval_trials, max_turns=training.eval_max_turns)
    k = training.eval_trials
    rows = [{"evaluation_id": f"{checkpoint['checkpoint_id'][:16]}:{r['group']}",
             "checkpoint_id": checkpoint["checkpoint_id"], "group_name": r["group"], "tasks": r["tasks"],
             "trials": k, "pass_1": r["pass^1"], "pass_k": r[f"pass^{k}"], "reward_mean": r["reward_mean"], "row": r}
            for r in result.rows]
    overall = result.overall()
    figures = {"pass_1": round_to(overall["pass^1"]), "pass_k": round_to(overall[f"pass^{k}"]),
               "reward_mean": round_to(overall["reward_mean"]), "k": k, "tasks": overall["tasks"],
               **{f"pass_1.{r['group']}": round_to(r["pass^1"]) for r in result.rows[1:]}}
    return write_stage(context, warehouse, "evaluations", round_key, rows, figures, started,
                       {"table": MetadataValue.md(_markdown(result.rows, k))})


def _markdown(rows: list[dict], k: int) -> str:
    lines = [f"| group | tasks | pass^1 | pass^{k} | reward |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['group']} | {r['tasks']} | {r['pass^1']:.3f} | {r[f'pass^{k}']:.3f} | {r['reward_mean']:.3f} |"
              for r in rows]
    return "\n".join(lines)
