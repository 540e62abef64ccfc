"""The per-round held-out table and plot that ``flywheel run`` ends with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flywheel_assets.store import Warehouse


def heldout_rows(store: Warehouse) -> list[dict[str, Any]]:
    """One row per evaluated round: held-out pass^1, pass^k (k = trials) and mean reward."""
    return store.records(
        "SELECT e.round, c.kind, e.trials AS k, e.tasks, e.pass_1, e.pass_k, e.reward_mean "
        "FROM evaluations AS e JOIN policy_checkpoints AS c USING (round, checkpoint_id) "
        "WHERE e.group_name = 'all' ORDER BY e.round")


def plot_heldout(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    rounds = [r["round"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    k = rows[0]["k"] if rows else 1
    for key, label in (("pass_1", "pass^1"), ("pass_k", f"pass^{k}"), ("reward_mean", "mean reward")):
        ax.plot(rounds, [r[key] for r in rows], marker="o", label=label)
    ax.set_ylim(0, 1)
    ax.set_xlabel("round (checkpoint trained in it)")
    ax.set_title("held-out Mock World evaluation")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
