"""The per-round held-out table and plot that ``flywheel run`` ends with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flywheel_assets.store import Warehouse


def heldout_rows(store: Warehouse, group: str = "all") -> list[dict[str, Any]]:
    """Held-out pass^1, pass^k (k = trials) with their 95% bootstrap intervals, and mean reward of ``group`` ('all', 'phase:linear',
    'domain:retail', …): the base before any task training first (round 'base', when r000 evaluated it), then
    one row per evaluated round."""
    return store.records(
        "SELECT CASE WHEN e.subject = 'base' THEN 'base' ELSE e.round END AS round, "
        "coalesce(c.kind, 'base') AS kind, e.trials AS k, e.tasks, e.pass_1, e.pass_k, e.reward_mean, "
        "e.pass_1_low, e.pass_1_high, e.pass_k_low, e.pass_k_high, "
        "e.greedy_pass_1, e.greedy_pass_1_low, e.greedy_pass_1_high "
        "FROM evaluations AS e LEFT JOIN policy_checkpoints AS c "
        "ON c.round = e.round AND c.checkpoint_id = e.checkpoint_id AND e.subject IS DISTINCT FROM 'base' "
        "WHERE e.group_name = $group ORDER BY e.subject = 'base' DESC, e.round", {"group": group})


def plot_heldout(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    rounds = [r["round"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    k = rows[0]["k"] if rows else 1
    curves = [("pass_1", "pass^1"), ("pass_k", f"pass^{k}"), ("reward_mean", "mean reward")]
    if rows and all(r.get("greedy_pass_1") is not None for r in rows):
        curves.insert(1, ("greedy_pass_1", "greedy"))
    for key, label in curves:
        line, = ax.plot(rounds, [r[key] for r in rows], marker="o", label=label)
        if all(r.get(f"{key}_low") is not None for r in rows) and key != "reward_mean":
            # the 95% bootstrap interval over tasks: what a round's difference must clear
            ax.fill_between(rounds, [r[f"{key}_low"] for r in rows], [r[f"{key}_high"] for r in rows],
                            color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_ylim(0, 1)
    ax.set_xlabel("checkpoint (base: before any task training; rNNN: trained in that round)")
    ax.set_title("held-out Mock World evaluation")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
