"""Plots of results by frequency group (PNG, fixed size whatever the number of classes:
at most MAX_WIDTH_PX wide, readable at LVIS's 1,203 classes). Every figure colours the groups
with reports.GROUP_COLORS and has one legend entry per group."""

import math
import os

import numpy as np

from .reports import GROUP_COLORS, GROUP_NAMES

__all__ = [
    "MAX_WIDTH_PX",
    "per_category_ap_figure",
    "ap_vs_image_count_figure",
    "history_figure",
    "group_bars_figure",
    "dataset_summary_figure",
    "plot_per_category_ap",
    "plot_all",
    "save",
    "figure_array",
]

DPI = 100
MAX_WIDTH_PX = 1600


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _group_handles(groups="rcf", extra=None):
    from matplotlib.patches import Patch

    return [
        Patch(color=GROUP_COLORS[g], label=extra(g) if extra else GROUP_NAMES[g]) for g in groups
    ]


def _with_ap(rows, task):
    key = f"{task}/AP"
    return [r for r in rows if r.get(key) is not None and math.isfinite(r[key])]


def save(fig, path):
    """Writes ``fig`` as a PNG and closes it; returns ``path``."""
    fig.savefig(path, dpi=DPI)
    _plt().close(fig)
    return path


def figure_array(fig):
    """The rendered figure as an (H, W, 3) uint8 array; closes it."""
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    _plt().close(fig)
    return image


def per_category_ap_figure(rows, task):
    """Bars of AP per category with ground truth, most training images on the left."""
    rows = sorted(_with_ap(rows, task), key=lambda r: -(r.get("image_count") or 0))
    if not rows:
        raise ValueError(f"no category has ground truth for {task}")
    plt = _plt()
    width = min(MAX_WIDTH_PX / DPI, max(6.0, 0.12 * len(rows)))
    fig, ax = plt.subplots(figsize=(width, 3.5))
    ax.bar(
        range(len(rows)),
        [r[f"{task}/AP"] for r in rows],
        color=[GROUP_COLORS[r["frequency"]] for r in rows],
        width=1.0,
        linewidth=0,
    )
    ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.set_xlabel(f"{len(rows)} categories, by training image count")
    ax.set_ylabel(f"{task} AP")
    ax.set_ylim(0, 100)
    ax.legend(handles=_group_handles(), loc="upper right")
    fig.tight_layout()
    return fig


def ap_vs_image_count_figure(rows, task):
    """AP of each category against its training image count (log x), coloured by group; a
    dashed line per group at its mean AP, spanning the group's image counts."""
    rows = _with_ap(rows, task)
    counted = [r for r in rows if (r.get("image_count") or 0) > 0]
    if not counted:
        raise ValueError(f"no category has ground truth and a training image count for {task}")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    key = f"{task}/AP"

    def legend_label(g):
        aps = [r[key] for r in counted if r["frequency"] == g]
        mean = f"mean {np.mean(aps):.1f}" if aps else "none"
        return f"{GROUP_NAMES[g]} ({len(aps)}, {mean})"

    for g in "rcf":
        group = [r for r in counted if r["frequency"] == g]
        if not group:
            continue
        x = [r["image_count"] for r in group]
        y = [r[key] for r in group]
        ax.scatter(x, y, s=14, color=GROUP_COLORS[g], edgecolors="none", zorder=3)
        ax.hlines(np.mean(y), min(x), max(x), colors=GROUP_COLORS[g], linestyles="--", lw=2)
    ax.set_xscale("log")
    ax.set_xlabel("training images of the category (log)")
    ax.set_ylabel(f"{task} AP")
    ax.set_ylim(-2, 102)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(handles=_group_handles(extra=legend_label), loc="upper left", title="group (n, AP)")
    fig.tight_layout()
    return fig


def history_figure(history, tasks=("bbox", "segm")):
    """AP, APr, APc, APf of each evaluation of a run against the training iteration (the
    evaluation's index when the iteration is unknown), one panel per task."""
    tasks = [t for t in tasks if any(f"{t}/AP" in h for h in history)]
    if not history or not tasks:
        raise ValueError("no evaluation in the history")
    plt = _plt()
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    have_iters = all(h.get("iteration") is not None for h in history)
    x = [h["iteration"] if have_iters else i for i, h in enumerate(history)]
    for ax, task in zip(axes[0], tasks):
        ax.plot(x, [_num(h.get(f"{task}/AP")) for h in history], "k-o", ms=4, label="all")
        for g in "rcf":
            y = [_num(h.get(f"{task}/AP{g}")) for h in history]
            ax.plot(x, y, "-o", ms=4, color=GROUP_COLORS[g], label=GROUP_NAMES[g])
        ax.set_title(f"{task} AP")
        ax.set_xlabel("iteration" if have_iters else "evaluation")
        ax.set_ylim(0, 100)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def _num(x):
    return float("nan") if x is None else float(x)


def group_bars_figure(runs, task):
    """
    Bars of AP, APr, APc, APf side by side for several runs.

    Args:
        runs: [(label, {"<task>/AP": ..., "<task>/APr": ...})].
    """
    if not runs:
        raise ValueError("no runs")
    plt = _plt()
    keys = ["AP", "APr", "APc", "APf"]
    width = min(MAX_WIDTH_PX / DPI, max(6.0, 1.2 + 0.5 * len(runs) * len(keys)))
    fig, ax = plt.subplots(figsize=(width, 4))
    bar = 0.8 / len(runs)
    colors = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(runs), 2)))
    for i, (label, metrics) in enumerate(runs):
        values = [_num(metrics.get(f"{task}/{k}")) for k in keys]
        pos = np.arange(len(keys)) - 0.4 + bar * (i + 0.5)
        bars = ax.bar(pos, np.nan_to_num(values), bar, color=colors[i], label=label)
        for b, v in zip(bars, values):
            text = "n/a" if math.isnan(v) else f"{v:.1f}"
            ax.annotate(text, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                        va="bottom", fontsize=7)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([f"{task} {k}" for k in keys])
    for tick, g in zip(ax.get_xticklabels()[1:], "rcf"):
        tick.set_color(GROUP_COLORS[g])
    ax.set_ylabel("AP")
    top = np.nanmax([_num(m.get(f"{task}/{k}")) for _, m in runs for k in keys] + [5.0])
    ax.set_ylim(0, min(105, 1.12 * top))  # room for the value labels
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=min(len(runs), 3))
    fig.tight_layout()
    return fig


def dataset_summary_figure(names, frequency, image_count, instance_count, instances_per_image):
    """Left: instances per class (log y), classes sorted by count, bars coloured by group.
    Right: histogram of the number of annotated instances per image."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    order = np.argsort(-np.asarray(instance_count), kind="stable")
    left.bar(
        range(len(order)),
        [max(instance_count[i], 0.5) for i in order],
        color=[GROUP_COLORS[frequency[i]] for i in order],
        width=1.0 if len(order) > 100 else 0.85,
        linewidth=0,
    )
    left.set_yscale("log")
    left.set_xlim(-0.5, len(order) - 0.5)
    left.set_xlabel(f"{len(order)} classes, by instance count")
    left.set_ylabel("instances (log)")
    left.legend(
        handles=_group_handles(
            extra=lambda g: f"{GROUP_NAMES[g]}: {sum(1 for f in frequency if f == g)} classes"
        )
    )
    if len(order) <= 40:
        left.set_xticks(range(len(order)))
        left.set_xticklabels([names[i] for i in order], rotation=90, fontsize=7)
    counts = np.asarray(instances_per_image)
    bins = np.arange(0, (counts.max() if counts.size else 0) + 2) - 0.5
    right.hist(counts, bins=bins if len(bins) <= 60 else 50, color="0.4")
    right.set_xlabel("instances per image")
    right.set_ylabel("images")
    right.set_title(f"{counts.size} images, {int(counts.sum())} instances", fontsize=9)
    fig.tight_layout()
    return fig


def plot_per_category_ap(rows, task, path):
    """Writes per_category_ap_figure to ``path`` (no file when no category has ground truth)."""
    try:
        return save(per_category_ap_figure(rows, task), path)
    except ValueError:
        return None


def plot_all(output_dir, rows, task, history):
    """The evaluation's plots in ``output_dir``; returns {name: path} of those drawn (a plot
    with nothing to draw is skipped)."""
    makers = {
        "per_category_ap_png": ("per_category_ap.png", lambda: per_category_ap_figure(rows, task)),
        "ap_vs_image_count_png": (
            "ap_vs_image_count.png",
            lambda: ap_vs_image_count_figure(rows, task),
        ),
        "history_png": ("ap_history.png", lambda: history_figure(history)),
    }
    written = {}
    for name, (filename, make) in makers.items():
        try:
            fig = make()
        except ValueError:
            continue
        written[name] = save(fig, os.path.join(output_dir, filename))
    return written
