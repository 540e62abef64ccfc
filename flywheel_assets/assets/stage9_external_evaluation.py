"""Stage 9: the round's checkpoint on the external benchmarks, BFCL-v4 multi-turn and
τ²-bench (off by default: ``FLYWHEEL_EXTERNAL_EVAL``; then the stage writes an empty
partition). The harnesses are ``flywheel_training/evals/``; τ²'s user simulator is the LLM
user role's endpoint (the world settings)."""

import time

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from flywheel_assets.assets.common import ROUND_GROUP, round_to, write_stage
from flywheel_assets.external_eval import result_rows
from flywheel_assets.partitions import rounds_partitions
from flywheel_assets.resources import ExternalEvalResource, TrainingResource, WarehouseResource, WorldResource
from flywheel_assets.world.settings import split_list


@asset(partitions_def=rounds_partitions, group_name=ROUND_GROUP, deps=["policy_checkpoint"],
       kinds={"pytorch", "duckdb"})
def external_evaluation(context: AssetExecutionContext, warehouse: WarehouseResource, training: TrainingResource,
                        external_eval: ExternalEvalResource, world: WorldResource) -> MaterializeResult:
    """External evaluation: this round's checkpoint on BFCL-v4 multi-turn (per category) and
    τ²-bench (per domain): accuracy / average reward and pass^k, with the models that played."""
    started = time.perf_counter()
    round_key = context.partition_key
    settings = external_eval.settings()
    if not settings.enabled:
        context.log.info(f"{round_key}: external benchmarks are off (FLYWHEEL_EXTERNAL_EVAL / --external-eval)")
        return write_stage(context, warehouse, "external_evaluations", round_key, [], {"enabled": 0}, started,
                           {"skipped": MetadataValue.text("external benchmarks are off (FLYWHEEL_EXTERNAL_EVAL)")})
    from flywheel_training.evals.run import run_benchmarks, user_endpoint

    store = warehouse.warehouse()
    [checkpoint] = store.read_round("policy_checkpoints", round_key)
    trials = settings.external_trials
    policy = training.load_policy(checkpoint["path"], f"embedded:{checkpoint['checkpoint_id'][:12]}",
                                  temperature=0.0 if trials == 1 else training.eval_temperature)
    world_settings = world.settings()
    endpoint = user_endpoint(world_settings.endpoint("user", required=False), world_settings.llm_api_key_env)
    results = run_benchmarks(policy, split_list(settings.benchmarks),
                             bfcl_categories=split_list(settings.bfcl_categories),
                             tau2_domains=split_list(settings.tau2_domains), limit=settings.limit, trials=trials,
                             user_endpoint=endpoint, report=context.log.info)
    rows = result_rows(results, checkpoint["checkpoint_id"])
    figures: dict[str, float | int] = {"enabled": 1, "results": len(rows)}
    for r in rows:
        figures[f"{r['benchmark']}.{r['category']}.{r['metric']}"] = round_to(r["value"])
    table = ["| benchmark | category | metric | k | value | entries |", "| --- | --- | --- | --- | --- | --- |"]
    table += [f"| {r['benchmark']} | {r['category']} | {r['metric']} | {r['k']} | {r['value']:.3f} | {r['entries']} |"
              for r in rows]
    return write_stage(context, warehouse, "external_evaluations", round_key, rows, figures, started,
                       {"table": MetadataValue.md("\n".join(table))})
