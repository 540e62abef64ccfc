"""The flywheel's assets, one module per stage in data-flow order (stage1 … stage6), plus
the held-out evaluation set. Stages pass data through the DuckDB warehouse, not IO managers."""

from flywheel_assets.assets.eval_tasks import eval_tasks
from flywheel_assets.assets.stage1_seed_tasks import seed_tasks
from flywheel_assets.assets.stage2_behavior_trees import behavior_trees
from flywheel_assets.assets.stage3_task_instances import task_instances
from flywheel_assets.assets.stage4_rollouts import rollouts
from flywheel_assets.assets.stage5_rubric_scores import rubric_scores
from flywheel_assets.assets.stage6_hard_samples import hard_samples

ROUND_ASSETS = [seed_tasks, behavior_trees, task_instances, rollouts, rubric_scores, hard_samples]
"""A round's stages in data-flow order."""

__all__ = ["ROUND_ASSETS", "behavior_trees", "eval_tasks", "hard_samples", "rollouts", "rubric_scores",
           "seed_tasks", "task_instances"]
