"""What the external benchmark harnesses (BFCL, τ²-bench) share: the result row, the
stand-in a policy request carries instead of a Mock World task, and the environment both
packages need before they are imported."""

from __future__ import annotations

import importlib
import os
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

INSTALL_HINT = "install them with: python -m flywheel_training.evals.install"


@dataclass(frozen=True)
class ExternalTaskRef:
    """Sent as ``PolicyRequest.instance`` for an external benchmark conversation.

    Model policies read at most ``instance_id`` (the local policy seeds its sampling from
    it); ``payload`` is privileged, for scripted gold-replay policies only.
    """

    instance_id: str
    payload: Any = None


@dataclass(frozen=True)
class ExternalResult:
    """One score of one benchmark slice: what the ``external_evaluations`` table stores."""

    benchmark: str        # "bfcl" or "tau2"
    category: str         # BFCL category or τ² domain
    metric: str           # "accuracy" / "pass^k" / "avg_reward"
    value: float
    k: int
    trials: int
    entries: int          # entries / tasks scored
    model: str            # the agent policy's name
    user_model: str = ""  # τ² user simulator ("" for BFCL)
    split: str = ""       # τ² task split ("" = all tasks the package ships)

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


def prepare_environment() -> None:
    """Settings both packages read at import time: BFCL writes result/score/lock folders
    under ``BFCL_PROJECT_ROOT`` (default: inside site-packages), litellm fetches its model
    cost map from the internet unless told to use the local copy."""
    if "BFCL_PROJECT_ROOT" not in os.environ:
        os.environ["BFCL_PROJECT_ROOT"] = tempfile.mkdtemp(prefix="flywheel-bfcl-")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def require(module: str, package: str) -> Any:
    """Import a benchmark package's module, or raise an error that says how to install it."""
    prepare_environment()
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RuntimeError(f"the benchmark package {package!r} is not importable ({exc}); {INSTALL_HINT}") from exc
