"""Play a policy on the external benchmarks chosen by name: what the ``external_evaluation``
stage and ``flywheel eval`` call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from flywheel_assets.world.rollout import BatchPolicy
from flywheel_training.evals.external import ExternalResult


def run_benchmarks(policy: BatchPolicy, benchmarks: Sequence[str], *, bfcl_categories: Sequence[str] = (),
                   tau2_domains: Sequence[str] = (), limit: int | None = None, trials: int = 1,
                   user_endpoint: Any = None, report: Callable[[str], None] | None = None) -> list[ExternalResult]:
    """``ExternalResult``s of ``policy`` on each benchmark. τ² needs ``user_endpoint``
    (``tau2.UserSimulatorEndpoint``) and fails, naming the settings to set, without one."""
    from flywheel_training.evals import bfcl, tau2

    results: list[ExternalResult] = []
    for benchmark in benchmarks:
        if benchmark == "bfcl":
            if report:
                report(f"BFCL-v4 multi-turn {', '.join(bfcl_categories)}: {policy.name}")
            results += bfcl.evaluate(policy, list(bfcl_categories), limit=limit, trials=trials).results
        elif benchmark == "tau2":
            if user_endpoint is None:
                raise ValueError("τ²-bench needs a user simulator: set FLYWHEEL_USER_BASE_URL and FLYWHEEL_USER_MODEL "
                                 "(or FLYWHEEL_LLM_BASE_URL and FLYWHEEL_LLM_MODEL)")
            for domain in tau2_domains:
                if report:
                    report(f"τ²-bench {domain}: {policy.name}, user simulator {user_endpoint.model}")
                results += tau2.evaluate(policy, domain, user_endpoint, limit=limit, trials=trials).results
        else:
            raise ValueError(f"unknown benchmark {benchmark!r}; choose from bfcl, tau2")
    return results


def user_endpoint(endpoint: tuple[str, str] | None, api_key_env: str) -> Any:
    """τ²'s user simulator at an OpenAI-compatible (base URL, model), or None without one."""
    from flywheel_training.evals.tau2 import UserSimulatorEndpoint

    if endpoint is None:
        return None
    base_url, model = endpoint
    return UserSimulatorEndpoint(model=model, base_url=base_url, api_key_env=api_key_env)
