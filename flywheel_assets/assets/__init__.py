"""The flywheel's assets, one module per stage in data-flow order (stage1 … stage8), plus
the held-out evaluation set. Stages pass data through the DuckDB warehouse, not IO managers."""

from flywheel_assets.assets.eval_tasks import eval_tasks
from flywheel_assets.assets.stage1_seed_tasks import seed_tasks
from flywheel_assets.assets.stage2_behavior_trees import behavior_trees
from flywheel_assets.assets.stage3_task_instances import task_instances
from flywheel_assets.assets.stage4_rollouts import rollouts
from flywheel_assets.assets.stage5_rubric_scores import rubric_scores
from flywheel_assets.assets.stage6_hard_samples import hard_samples
from flywheel_assets.assets.stage7_policy_checkpoint import policy_checkpoint
from flywheel_assets.assets.stage8_evaluation import evaluation
from flywheel_assets.assets.stage9_external_evaluation import external_evaluation

DATA_ASSETS = [seed_tasks, behavior_trees, task_instances, rollouts, rubric_scores, hard_samples]
"""The stages that make a round's data."""
TRAINING_ASSETS = [policy_checkpoint, evaluation, external_evaluation]
"""The stages that train the round's checkpoint and evaluate it (held out, then external)."""
ROUND_ASSETS = DATA_ASSETS + TRAINING_ASSETS
"""A complete round's stages in data-flow order."""

__all__ = ["DATA_ASSETS", "ROUND_ASSETS", "TRAINING_ASSETS", "behavior_trees", "eval_tasks", "evaluation",
           "external_evaluation", "hard_samples", "policy_checkpoint", "rollouts", "rubric_scores", "seed_tasks",
           "task_instances"]
