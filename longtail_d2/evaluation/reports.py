"""Tables and files of LVIS results by frequency group: the r/c/f summary, the classwise table
(mmdetection's layout), strict JSON, the CSV, the run's history of evaluations, and
:func:`write_reports`, which writes all of them (and the plots of :mod:`.plots`)."""

import csv
import json
import logging
import math
import os
import time

from tabulate import tabulate

__all__ = [
    "GROUP_NAMES",
    "GROUP_COLORS",
    "frequency_group_table",
    "classwise_table",
    "strict_json",
    "dump_json",
    "write_csv",
    "append_history",
    "read_history",
    "write_reports",
    "plot_per_category_ap",
]

GROUP_NAMES = {"r": "rare", "c": "common", "f": "frequent"}
# One colour per group, shared by every plot and the visualiser (matplotlib's tab10 colours).
GROUP_COLORS = {"r": "tab:red", "c": "tab:orange", "f": "tab:blue"}
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")

# Files write_reports puts into its folder (metrics.json keeps its name: the tests and
# tools/compare_results.py read it; detectron2's OUTPUT_DIR/metrics.json is a different,
# JSON-lines file one level up).
METRICS_FILE = "metrics.json"
PER_CATEGORY_JSON = "per_category_ap.json"
PER_CATEGORY_CSV = "per_category_ap.csv"
SUMMARY_TEXT = "summary.txt"
HISTORY_FILE = "history.jsonl"


def _is_missing(x):
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def frequency_group_table(metrics_per_task, rows) -> str:
    """
    Args:
        metrics_per_task: {task: {"AP": ..., "APf": ...}} as returned by the evaluator.
        rows: per-category dicts with "frequency" and "<task>/AP".
    Returns a text table: one line per task, then how many categories each group averages.
    """
    table = [
        [task] + [metrics.get(k, float("nan")) for k in SUMMARY_KEYS]
        for task, metrics in metrics_per_task.items()
    ]
    text = tabulate(table, headers=["task"] + list(SUMMARY_KEYS), floatfmt=".2f", tablefmt="pipe")
    task = next(iter(metrics_per_task))
    counts = {
        g: sum(1 for r in rows if r["frequency"] == g and not _is_missing(r.get(f"{task}/AP")))
        for g in GROUP_NAMES
    }
    text += "\ncategories with ground truth: " + ", ".join(
        f"{GROUP_NAMES[g]} {n}" for g, n in counts.items()
    )
    return text


def _capped(entries, max_entries):
    """The lowest-AP entries, at most ``max_entries``: half of the places go to rare classes,
    a quarter each to common and frequent; places a group cannot fill pass to the others."""
    by_group = {g: sorted((e for e in entries if e[1] == g), key=lambda e: e[2]) for g in "rcf"}
    quota = {"r": max_entries // 2, "c": max_entries // 4}
    quota["f"] = max_entries - quota["r"] - quota["c"]
    take = {g: min(quota[g], len(by_group[g])) for g in "rcf"}
    spare = max_entries - sum(take.values())
    for g in "rcf":  # rare first
        extra = min(spare, len(by_group[g]) - take[g])
        take[g] += extra
        spare -= extra
    return [e for g in "rcf" for e in by_group[g][: take[g]]]


def classwise_table(rows, task, *, pairs=3, max_rows=60):
    """
    mmdetection's classwise layout: ``category | AP`` repeated ``pairs`` times per line, the
    categories in group order (rare, common, frequent), lowest AP first within a group.
    Categories without ground truth in the evaluated set (AP NaN) are left out.

    At LVIS scale only ``max_rows`` lines are shown: the lowest-AP categories, half of them
    rare (the full table is always in per_category_ap.csv). Returns the text.
    """
    key = f"{task}/AP"
    entries = [
        (f"{r['name']} ({r['frequency']})", r["frequency"], r[key])
        for r in rows
        if not _is_missing(r.get(key))
    ]
    total = len(entries)
    shown = entries if total <= pairs * max_rows else _capped(entries, pairs * max_rows)
    order = {g: i for i, g in enumerate("rcf")}
    shown = sorted(shown, key=lambda e: (order[e[1]], e[2], e[0]))
    flat = [x for name, _, ap in shown for x in (name, ap)]
    width = 2 * pairs
    flat += [""] * (-len(flat) % width)
    lines = [flat[i : i + width] for i in range(0, len(flat), width)]
    text = tabulate(
        lines, headers=["category", f"{task} AP"] * pairs, floatfmt=".2f", tablefmt="pipe"
    )
    if len(shown) < total:
        counts = ", ".join(
            f"{GROUP_NAMES[g]} {sum(e[1] == g for e in shown)}/{sum(e[1] == g for e in entries)}"
            for g in "rcf"
        )
        text += (
            f"\nshowing the lowest-AP {len(shown)} of {total} categories ({counts}); "
            f"all in {PER_CATEGORY_CSV}"
        )
    return text


def strict_json(obj):
    """A copy of ``obj`` that json can write as strict JSON: NaN and infinities become None
    (null), numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):  # numpy / torch scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dump_json(obj, path):
    """Writes ``obj`` as strict JSON (null instead of NaN)."""
    with open(path, "w") as f:
        json.dump(strict_json(obj), f, indent=1, allow_nan=False)


def write_csv(rows, path):
    """One line per category: every key of the rows (id, name, frequency, image_count,
    <task>/AP ...); a missing AP (no ground truth) is an empty cell."""
    fields = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if _is_missing(r.get(k)) else r.get(k) for k in fields})


def append_history(output_dir, flat_metrics, iteration=None):
    """Appends one evaluation (its training iteration, or None outside training) to
    ``history.jsonl`` in ``output_dir``, one strict JSON object per line."""
    record = {"iteration": iteration, "time": round(time.time(), 3), **flat_metrics}
    with open(os.path.join(output_dir, HISTORY_FILE), "a") as f:
        f.write(json.dumps(strict_json(record), allow_nan=False) + "\n")


def read_history(output_dir):
    """The evaluations recorded in ``output_dir``'s history.jsonl, oldest first; a repeated
    iteration (a restarted run) keeps its latest record."""
    path = os.path.join(output_dir, HISTORY_FILE)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    latest = {}
    for i, r in enumerate(records):
        latest[r["iteration"] if r.get("iteration") is not None else f"eval{i}"] = r
    return list(latest.values())


def _current_storage(storage):
    if storage is not None:
        return storage
    from detectron2.utils.events import _CURRENT_STORAGE_STACK

    return _CURRENT_STORAGE_STACK[-1] if _CURRENT_STORAGE_STACK else None


def write_reports(output_dir, metrics, rows, tasks, storage=None, logger=None):
    """
    Writes every result file of one evaluation into ``output_dir`` (created if needed):
    ``metrics.json`` (flat ``bbox/AP`` ... ``segm/APf``, strict JSON), ``per_category_ap.json``
    and ``.csv``, ``summary.txt`` (the r/c/f table and the classwise tables), ``history.jsonl``
    (appended) and the plots of :mod:`.plots`. With an active detectron2 EventStorage (during
    training; or ``storage`` given) the plots and per-group histograms of per-category AP go to
    it, hence to TensorBoard (the per-group scalars are put there by detectron2's EvalHook).

    Args:
        metrics: {task: {"AP": ..., "APr": ...}}.
        rows: per-category dicts: id, name, frequency, image_count, "<task>/AP" per task.
        tasks: the tasks of ``metrics`` ("bbox", "segm").
        logger: if given, the classwise table of the main task (segm if evaluated, else bbox)
            is logged to it; summary.txt has the r/c/f summary and every task's table.
        output_dir: None writes nothing (logging and storage only).
    Returns {name: path} of the files written.
    """
    from . import plots

    tasks = tuple(tasks)
    # the task of the log's table and the plots
    task = "segm" if "segm" in tasks else (tasks[0] if tasks else None)
    summary = frequency_group_table(metrics, rows)
    if logger is not None and task:  # the caller logs the summary (frequency_group_table)
        logger.info(f"per-category {task} AP:\n{classwise_table(rows, task)}")
    text = "\n\n".join([summary] + [classwise_table(rows, t) for t in tasks])
    storage = _current_storage(storage)
    iteration = storage.iter if storage is not None else None
    written = {}
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        flat = {f"{t}/{k}": v for t, m in metrics.items() for k, v in m.items()}
        files = {
            "metrics": os.path.join(output_dir, METRICS_FILE),
            "per_category_json": os.path.join(output_dir, PER_CATEGORY_JSON),
            "per_category_csv": os.path.join(output_dir, PER_CATEGORY_CSV),
            "summary": os.path.join(output_dir, SUMMARY_TEXT),
        }
        dump_json(flat, files["metrics"])
        dump_json(rows, files["per_category_json"])
        write_csv(rows, files["per_category_csv"])
        with open(files["summary"], "w") as f:
            f.write(text + "\n")
        append_history(output_dir, flat, iteration)
        written.update(files, history=os.path.join(output_dir, HISTORY_FILE))
        if task:
            written.update(plots.plot_all(output_dir, rows, task, read_history(output_dir)))
    if storage is not None and task:
        _put_to_storage(storage, rows, tasks, task, os.path.basename(output_dir or "eval"))
    return written


def _put_to_storage(storage, rows, tasks, task, prefix):
    """Per-group histograms of per-category AP and the AP-vs-image-count figure."""
    import torch

    from . import plots

    for t in tasks:
        for g in GROUP_NAMES:
            values = [r[f"{t}/AP"] for r in rows if r["frequency"] == g]
            values = [v for v in values if not _is_missing(v)]
            if values:
                storage.put_histogram(
                    f"{prefix}/{t}/per_category_AP_{GROUP_NAMES[g]}", torch.tensor(values), bins=20
                )
    try:
        image = plots.figure_array(plots.ap_vs_image_count_figure(rows, task))
    except ValueError as e:  # nothing to draw (no category with ground truth)
        logging.getLogger(__name__).info(f"no AP plot for TensorBoard: {e}")
        return
    storage.put_image(
        f"{prefix}/{task}/ap_vs_image_count", torch.from_numpy(image).permute(2, 0, 1).float() / 255
    )


def plot_per_category_ap(rows, task, path):
    """Bar plot of AP per category (kept here for callers of the older API; see .plots)."""
    from .plots import plot_per_category_ap as _plot

    return _plot(rows, task, path)
