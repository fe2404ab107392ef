"""Tables and plots of LVIS results by frequency group."""

import math

from tabulate import tabulate

__all__ = ["frequency_group_table", "plot_per_category_ap"]

GROUP_NAMES = {"r": "rare", "c": "common", "f": "frequent"}
GROUP_COLORS = {"r": "tab:red", "c": "tab:orange", "f": "tab:blue"}


def frequency_group_table(metrics_per_task, rows) -> str:
    """
    Args:
        metrics_per_task: {task: {"AP": ..., "APf": ...}} as returned by the evaluator.
        rows: per-category dicts with "frequency" and "<task>/AP".
    Returns a text table: one line per task, then how many categories each group averages.
    """
    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"]
    table = [[task] + [metrics[k] for k in keys] for task, metrics in metrics_per_task.items()]
    text = tabulate(table, headers=["task"] + keys, floatfmt=".2f", tablefmt="pipe")
    task = next(iter(metrics_per_task))
    counts = {
        g: sum(1 for r in rows if r["frequency"] == g and not math.isnan(r[f"{task}/AP"]))
        for g in GROUP_NAMES
    }
    text += "\ncategories with ground truth: " + ", ".join(
        f"{GROUP_NAMES[g]} {n}" for g, n in counts.items()
    )
    return text


def plot_per_category_ap(rows, task, path):
    """Bar plot of AP per category, most frequent (by training image count) on the left."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if not math.isnan(r[f"{task}/AP"])]
    rows = sorted(rows, key=lambda r: -(r.get("image_count") or 0))
    fig, ax = plt.subplots(figsize=(max(6, 0.12 * len(rows)), 3.5))
    ax.bar(
        range(len(rows)),
        [r[f"{task}/AP"] for r in rows],
        color=[GROUP_COLORS[r["frequency"]] for r in rows],
        width=1.0,
    )
    for g, color in GROUP_COLORS.items():
        ax.bar([], [], color=color, label=GROUP_NAMES[g])
    ax.set_xlabel("category (by training image count)")
    ax.set_ylabel(f"{task} AP")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
