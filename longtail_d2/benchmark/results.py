"""Results of benchmark runs: reading a run's LVIS metrics, mean and standard deviation over
seeds, and the markdown table, CSV and bar chart of them."""

import csv
import glob
import json
import math
import os

import numpy as np

from ..evaluation.reports import PER_CATEGORY_JSON

__all__ = [
    "TASKS",
    "CAP_FREE_TASKS",
    "GROUP_KEYS",
    "read_metrics",
    "read_per_category_ap",
    "metrics_file",
    "group_seed_spread",
    "evaluation_seed_variance",
    "aggregate",
    "paired_differences",
    "markdown_table",
    "markdown_paired_table",
    "write_csv",
    "plot_groups",
]

TASKS = ("segm", "bbox")  # LVIS's protocol (the per-image detection cap)
# AP-fixed and AP-pool (runs evaluated with TEST.DETS_PER_CATEGORY > 0): tabulated when present.
CAP_FREE_TASKS = ("segm_fixed", "bbox_fixed", "segm_pool", "bbox_pool")
ALL_TASKS = TASKS + CAP_FREE_TASKS
SUMMARY_KEYS = ("AP", "APr", "APc", "APf")
GROUP_KEYS = ("APr", "APc", "APf")
TASK_TITLES = {
    "segm": "mask",
    "bbox": "box",
    "segm_fixed": "mask fixed",
    "bbox_fixed": "box fixed",
    "segm_pool": "mask pool",
    "bbox_pool": "box pool",
}
GROUP_COLORS = {"APr": "tab:red", "APc": "tab:orange", "APf": "tab:blue"}


def _has_ap(record):
    return isinstance(record, dict) and any(f"{t}/AP" in record for t in TASKS)


def _parse(path):
    """The metrics dict of a file: a JSON object, or the last record with ``<task>/AP`` of a
    JSON-lines file (detectron2's JSONWriter format); None if it has none."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    try:
        data = json.loads(text)
        return data if _has_ap(data) else None
    except json.JSONDecodeError:
        pass
    found = None
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if _has_ap(record):
            found = record
    return found


def metrics_file(output_dir, dataset):
    """The file with the evaluation of ``dataset`` in a run's folder: ``inference/<dataset>/
    metrics.json``, or else any other ``*.json`` there with ``<task>/AP`` keys; None if none."""
    folder = os.path.join(output_dir, "inference", dataset)
    candidates = [os.path.join(folder, "metrics.json")]
    candidates += sorted(set(glob.glob(os.path.join(folder, "*.json"))) - set(candidates))
    for path in candidates:
        if os.path.isfile(path) and _parse(path) is not None:
            return path
    return None


def read_metrics(output_dir, dataset):
    """{"segm/APr": 12.3, ...} of a run's evaluation on ``dataset`` (null as NaN), or None."""
    path = metrics_file(output_dir, dataset)
    if path is None:
        return None
    return {
        k: float("nan") if v is None else float(v)
        for k, v in _parse(path).items()
        if isinstance(v, (int, float)) or v is None
    }


def read_per_category_ap(output_dir, dataset):
    """The per-category rows of a run's evaluation on ``dataset`` (``inference/<dataset>/
    per_category_ap.json``: id, name, frequency, image_count, ``<task>/AP``), or None."""
    path = os.path.join(output_dir, "inference", dataset, PER_CATEGORY_JSON)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def group_seed_spread(per_class_ap):
    """
    Where the seed std of a group's AP (APr: the mean AP of its k classes) comes from. Its
    variance over seeds is (the sum of the k classes' variances + the sum of the covariances of
    the k (k - 1) pairs of classes) / k^2. With classes that vary independently from seed to
    seed, the group's std is sqrt(sum of variances) / k: it shrinks as 1 / sqrt(k) with the
    number of classes (9 rare classes in the generated dataset, 337 in LVIS v1), while a larger
    evaluation split only removes the part of each class's spread that comes from which images
    score it. A covariance part well above zero means the seed moves the classes together.

    Args:
        per_class_ap: array [seeds, k], AP of each class of the group in each seed (seeds >= 2;
            a class with a NaN in any seed, e.g. no ground truth, is left out).
    Returns:
        dict: "seeds", "classes" (k), "mean" and "std" (sample std, n - 1) of the group AP over
        seeds, "class_std" [k] (each class's seed std), "independent_std" (sqrt(sum of the
        classes' variances) / k), "covariance_var" (variance of the group AP minus
        independent_std^2: the pairs' covariances / k^2).
    """
    a = np.asarray(per_class_ap, float)
    a = a[:, np.isfinite(a).all(0)]
    seeds, k = a.shape
    if seeds < 2 or k < 1:
        raise ValueError(f"need >= 2 seeds and >= 1 class with AP in every seed, got {seeds}, {k}")
    group = a.mean(1)
    class_var = a.var(0, ddof=1)
    independent_var = float(class_var.sum()) / k**2
    var = float(group.var(ddof=1))
    return {
        "seeds": seeds,
        "classes": k,
        "mean": float(group.mean()),
        "std": math.sqrt(var),
        "class_std": np.sqrt(class_var),
        "independent_std": math.sqrt(independent_var),
        "covariance_var": var - independent_var,
    }


def evaluation_seed_variance(resampled):
    """
    The part of the seed variance of a metric that comes from which images the evaluation split
    holds, from the image bootstrap of each seed's model with the same resamples
    (``tools/evaluate.py --bootstrap N`` with the same ``--bootstrap-seed``).

    Model s scored on resample b is x_s(b) = t_s + e(b) + u_s(b): its trained quality, noise
    that every model shares (the resample is easy or hard) and noise of its own (which of its
    own errors the resample holds). e is the same for every seed, so the seed variance observed on
    the split is var(t) + var(u). The deviation from the seeds' mean on the same resample,
    x_s(b) - mean_s' x_s'(b), varies over b by var(u) (1 - 1/n) for n seeds (e cancels); so
    var(u) = n / (n - 1) * the mean over seeds of that variance. It falls as 1 / (number of
    evaluation images); var(t) does not.

    Args:
        resampled: array [seeds, N resamples] of the metric, the same resamples in every row
            (n >= 2 seeds, N >= 2; resamples with a NaN in any seed are left out).
    Returns:
        var(u), in the metric's units squared.
    """
    x = np.asarray(resampled, float)
    x = x[:, np.isfinite(x).all(0)]
    n, num = x.shape
    if n < 2 or num < 2:
        raise ValueError(f"need >= 2 seeds and >= 2 resamples without NaN, got {n}, {num}")
    deviation = x - x.mean(0)
    return float(deviation.var(1, ddof=1).mean()) * n / (n - 1)


def _mean_std(values):
    """(mean, sample std with n - 1) of the finite values; NaN where undefined."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    mean = float(values.mean()) if len(values) else float("nan")
    std = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    return mean, std


def aggregate(results):
    """
    Args:
        results: {method: [metrics dict of each finished seed]} in table order.
    Returns:
        {method: {"n": seeds, "<task>/<key>": (mean, std)}}, std the sample standard deviation
        (n - 1 in the denominator; NaN with one seed). A metric that is NaN in some seed (a
        group with no category evaluated) is averaged over the others.
    """
    table = {}
    for method, runs in results.items():
        row = {"n": len(runs)}
        for task in ALL_TASKS:
            for key in SUMMARY_KEYS:
                values = [r.get(f"{task}/{key}", float("nan")) for r in runs]
                row[f"{task}/{key}"] = _mean_std(values)
        table[method] = row
    return table


def paired_differences(by_seed, pairs):
    """
    The difference of each method to its baseline run of the same seed. A seed fixes the data
    order (for the same sampler) and the initial weights of the layers the methods share, so
    their results move together from seed to seed; the per-seed difference varies far less than
    either, which is what tells a method from its baseline with few seeds.

    Args:
        by_seed: {method: {seed: metrics dict}} of the finished runs.
        pairs: [(method, baseline)] in table order.
    Returns:
        {(method, baseline): {"n": seeds both finished, "<task>/<key>": (mean, std)}} of
        method - baseline over those seeds (std with n - 1; NaN with one seed).
    """
    table = {}
    for method, baseline in pairs:
        ours, theirs = by_seed.get(method, {}), by_seed.get(baseline, {})
        seeds = sorted(set(ours) & set(theirs))
        row = {"n": len(seeds)}
        for task in ALL_TASKS:
            for key in SUMMARY_KEYS:
                name = f"{task}/{key}"
                diff = [ours[s].get(name, np.nan) - theirs[s].get(name, np.nan) for s in seeds]
                row[name] = _mean_std(diff)
        table[(method, baseline)] = row
    return table


def _tasks(table):
    """The tasks with at least one number (a box-only model has no segm columns; runs without
    TEST.DETS_PER_CATEGORY have no AP-fixed / AP-pool columns)."""
    return [
        t
        for t in ALL_TASKS
        if any(math.isfinite(row[f"{t}/AP"][0]) for row in table.values() if row["n"])
    ] or ["bbox"]


def _cell(mean, std):
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.1f}" if not math.isfinite(std) else f"{mean:.1f} ± {std:.1f}"


def markdown_table(table, caption=""):
    """One row per method: seeds, then mean ± std of AP, APr, APc, APf per task."""
    tasks = _tasks(table)
    header = ["method", "seeds"] + [f"{TASK_TITLES[t]} {k}" for t in tasks for k in SUMMARY_KEYS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, row in table.items():
        cells = [method, str(row["n"])]
        cells += [_cell(*row[f"{t}/{k}"]) for t in tasks for k in SUMMARY_KEYS]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    return (caption + "\n\n" + text) if caption else text


def markdown_paired_table(table, caption=""):
    """One row per (method, baseline): seeds both finished, then mean ± std over seeds of the
    per-seed difference method - baseline of AP, APr, APc, APf per task."""
    tasks = _tasks(table) if table else ["segm", "bbox"]
    header = ["method - baseline", "seeds"]
    header += [f"{TASK_TITLES[t]} {k}" for t in tasks for k in SUMMARY_KEYS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (method, baseline), row in table.items():
        cells = [f"{method} - {baseline}", str(row["n"])]
        cells += [_signed_cell(*row[f"{t}/{k}"]) for t in tasks for k in SUMMARY_KEYS]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    return (caption + "\n\n" + text) if caption else text


def _signed_cell(mean, std):
    if not math.isfinite(mean):
        return "–"
    return f"{mean:+.1f}" if not math.isfinite(std) else f"{mean:+.1f} ± {std:.1f}"


def write_csv(table, path):
    """method, seeds, then <task>/<key> mean and std columns (empty when undefined): segm and
    bbox always, AP-fixed / AP-pool tasks when some run has them."""
    present = _tasks(table)
    tasks = TASKS + tuple(t for t in CAP_FREE_TASKS if t in present)
    columns = [f"{t}/{k}" for t in tasks for k in SUMMARY_KEYS]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        header = [f"{c} {s}" for c in columns for s in ("mean", "std")]
        writer.writerow(["method", "seeds"] + header)
        for method, row in table.items():
            values = [v for c in columns for v in row[c]]
            cells = ["" if math.isnan(v) else f"{v:.4f}" for v in values]
            writer.writerow([method, row["n"]] + cells)


def plot_groups(table, path, title=""):
    """Bar chart: APr, APc, APf of each method (mask AP, or box AP for box-only models), bars at
    the mean over seeds, error bars one standard deviation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = _tasks(table)[0]
    methods = [m for m, row in table.items() if row["n"]]
    x = np.arange(len(methods))
    width = 0.27
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(methods) + 2), 4.0))
    for i, key in enumerate(GROUP_KEYS):
        means = [table[m][f"{task}/{key}"][0] for m in methods]
        stds = [np.nan_to_num(table[m][f"{task}/{key}"][1]) for m in methods]
        ax.bar(x + (i - 1) * width, means, width, yerr=stds, capsize=3, label=key,
               color=GROUP_COLORS[key])
    ax.set_xticks(x)
    ax.set_xticklabels(methods, rotation=30, ha="right")
    ax.set_ylabel(f"{TASK_TITLES[task]} AP (mean ± std over seeds)")
    if title:
        ax.set_title(title)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
