"""External benchmarks of a checkpoint: BFCL-v4 multi-turn and τ²-bench, as a round's
``external_evaluation`` stage and as ``flywheel eval``. The harnesses live in
``flywheel_training/evals/`` (bfcl.py, tau2.py); this module holds their settings and turns
their results into ``external_evaluations`` rows (``flywheel_training/evals/run.py`` plays
them). No Dagster, no torch here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from flywheel_assets.world.settings import SettingsGroup, setting, split_list

BENCHMARKS = ("bfcl", "tau2")
BFCL_CATEGORIES = ("base", "miss_func", "miss_param", "long_context")
TAU2_DOMAINS = ("airline", "retail", "telecom")


class ExternalEvalSettings(SettingsGroup):
    """Which external benchmarks a round's checkpoint plays (off by default: the embedded model
    scores near 0 on them, and τ² needs an LLM user-simulator endpoint)."""

    group: ClassVar[str] = "external_eval"

    enabled: bool = setting(False, env="FLYWHEEL_EXTERNAL_EVAL", flag="external-eval",
                            help="run the external_evaluation stage of every round (off: it writes an empty "
                                 "partition)")
    benchmarks: str = setting("bfcl", env="FLYWHEEL_EXTERNAL_BENCHMARKS", flag="external-benchmarks",
                              choices=lambda: BENCHMARKS, many=True,
                              help="the benchmarks the stage runs (tau2 needs the LLM user role's endpoint: "
                                   "FLYWHEEL_USER_BASE_URL/_MODEL or FLYWHEEL_LLM_BASE_URL/_MODEL)")
    bfcl_categories: str = setting(",".join(BFCL_CATEGORIES), env="FLYWHEEL_BFCL_CATEGORIES",
                                   choices=lambda: BFCL_CATEGORIES, many=True,
                                   help="BFCL-v4 multi-turn categories (200 entries each)")
    tau2_domains: str = setting("retail", env="FLYWHEEL_TAU2_DOMAINS", choices=lambda: TAU2_DOMAINS, many=True,
                                help="τ²-bench domains")
    external_limit: int = setting(0, env="FLYWHEEL_EXTERNAL_LIMIT", ge=0,
                                  help="entries per BFCL category / tasks per τ² domain (0: all)")
    external_trials: int = setting(1, env="FLYWHEEL_EXTERNAL_TRIALS", ge=1,
                                   help="trials per entry (pass^k for k up to this)")

    @property
    def limit(self) -> int | None:
        return self.external_limit or None


def result_rows(results: Sequence[Any], checkpoint_sha256: str | None) -> list[dict[str, Any]]:
    """``external_evaluations`` rows of harness results (``evals.external.ExternalResult``)."""
    rows = []
    for r in results:
        row = r.as_row()
        key = ":".join(str(row[c]) for c in ("benchmark", "category", "split", "metric", "k"))
        rows.append({"evaluation_id": f"{(checkpoint_sha256 or row['model'])[:16]}:{key}",
                     "checkpoint_id": checkpoint_sha256, **row})
    return rows
