"""Stage 6: the instances the policy failed, augmented into harder variants that several
independent solvers agree on; the kept ones go into the next round's instances."""

import time
from collections import Counter

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from flywheel_assets.assets.common import ROUND_GROUP, round_to, write_stage
from flywheel_assets.assets.world_llm import stage_world
from flywheel_assets.partitions import rounds_partitions
from flywheel_assets.resources import RoundConfigResource, WarehouseResource, WorldResource
from flywheel_assets.store.rows import hard_sample_rows, instances_from_rows, scores_from_rows, trajectories_from_rows
from flywheel_assets.world import pipeline


@asset(partitions_def=rounds_partitions, group_name=ROUND_GROUP,
       deps=["task_instances", "rollouts", "rubric_scores"], kinds={"python", "duckdb"})
def hard_samples(context: AssetExecutionContext, warehouse: WarehouseResource, round_config: RoundConfigResource,
                 world: WorldResource) -> MaterializeResult:
    """Hard samples: every augmentation candidate (perturbed constraints, personas,
    adversarial escalation) of a failed instance, with whether the consistency filter kept it."""
    started = time.perf_counter()
    round_key = context.partition_key
    store = warehouse.warehouse()
    instances = instances_from_rows(store.read_round("task_instances", round_key))
    rollout_rows = store.read_round("rollouts", round_key)
    scores = scores_from_rows(store.read_round("rubric_scores", round_key))
    # the policy as it was when the rollouts were made, not as the resource says now
    policy_names = sorted({r["policy"] for r in rollout_rows if r["role"] == "policy"})
    if len(policy_names) > 1:
        raise ValueError(f"{round_key}: rollouts hold several policies {policy_names}; re-materialise rollouts")
    # the variants are verified in the round's world: its LLM user and tools, and (with an LLM
    # teacher) two different models as the independent solvers
    with stage_world(warehouse, world, round_key, "hard_samples", ("user", "tool", "teacher")) as llm:
        report = pipeline.hard_samples(round_config.round_config(), round_key, instances,
                                       trajectories_from_rows(rollout_rows), scores,
                                       policy_names[0] if policy_names else "", llm.solvers(round_key),
                                       user_factory=llm.roles.user_factory, backend_for=llm.roles.backend_for)
    rows = hard_sample_rows(report)
    kept = Counter(r["operator"] for r in rows if r["kept"])
    dropped = Counter(r["reason"].split(":")[0] for r in rows if not r["kept"] and r["reason"])
    not_applicable = Counter(r["operator"] for r in report.records if r["variant_id"] is None)
    counts = report.counts()
    figures = {**counts, "keep_rate": round_to(counts["kept"] / counts["generated"]) if counts["generated"] else 0.0,
               **{f"kept_{op}": n for op, n in sorted(kept.items())}, **llm.figures()}
    return write_stage(context, warehouse, "hard_samples", round_key, rows, figures, started,
                       {"dropped_by": MetadataValue.json(dict(dropped.most_common(20))),
                        "not_applicable_by_operator": MetadataValue.json(dict(not_applicable))},
                       extra={"llm_calls": llm.call_rows()})
