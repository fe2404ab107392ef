#!/usr/bin/env python
"""
Table (markdown) of LVIS results of several runs, and a bar chart of AP by frequency group.

    python tools/compare_results.py output/demo output/EQL/eql_mask_rcnn_R_18_FPN_demo
    python tools/compare_results.py output/*/*_demo --task segm --plot compare.png
    python tools/compare_results.py run1/inference/val/metrics.json run2/metrics.json

Each argument is
  - an OUTPUT_DIR: every OUTPUT_DIR/inference/<dataset>/metrics.json is read (or, when there is
    none, detectron2's JSON-lines OUTPUT_DIR/metrics.json);
  - an evaluation's metrics.json (one JSON object: "bbox/AP" ... "segm/APf");
  - detectron2's JSON-lines metrics.json: its last record with AP keys is read ("bbox/AP" or,
    with several test sets, "<dataset>/bbox/AP").
"""
import argparse
import glob
import json
import math
import os
import re
import sys

from tabulate import tabulate

ALL_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
GROUP_KEYS = ("AP", "APr", "APc", "APf")
TASK_NAMES = {"bbox": "box", "segm": "mask"}
# "bbox/AP" or "<dataset>/bbox/AP" in detectron2's JSON-lines records
AP_KEY = re.compile(r"^(?:(?P<dataset>.+)/)?(?P<task>bbox|segm)/(?P<metric>AP\w*)$")


class InputError(ValueError):
    """A path that holds no results; the message names it."""


def _number(x):
    return float("nan") if x is None else float(x)


def _split_by_dataset(record, default_dataset):
    """{dataset: {"bbox/AP": ...}} from a flat record whose keys may carry a dataset prefix."""
    found = {}
    for key, value in record.items():
        m = AP_KEY.match(key)
        if m and isinstance(value, (int, float, type(None))):
            dataset = m["dataset"] or default_dataset
            found.setdefault(dataset, {})[f"{m['task']}/{m['metric']}"] = _number(value)
    return found


def read_results_file(path):
    """[(dataset, {"bbox/AP": ...})] of one metrics file, either format."""
    with open(path) as f:
        text = f.read()
    try:
        records = [json.loads(text)]  # an evaluation's metrics.json: one object
        # its folder is inference/<dataset>/
        default = os.path.basename(os.path.dirname(os.path.abspath(path)))
    except json.JSONDecodeError:  # detectron2's JSON-lines file
        default = "-"  # a single test set's keys carry no dataset name
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}: line {n} is not JSON ({e.msg})") from None
    for record in reversed(records):  # the last record with AP keys
        found = _split_by_dataset(record, default) if isinstance(record, dict) else {}
        if found:
            return sorted(found.items())
    raise InputError(f"{path}: no bbox/AP or segm/AP values")


def results_of(path):
    """[(dataset, metrics)] of a run folder or a file."""
    if os.path.isfile(path):
        return read_results_file(path)
    if not os.path.isdir(path):
        raise InputError(f"{path}: no such file or folder")
    files = sorted(glob.glob(os.path.join(path, "inference", "*", "metrics.json")))
    if files:
        return [item for f in files for item in read_results_file(f)]
    if os.path.isfile(os.path.join(path, "metrics.json")):
        return read_results_file(os.path.join(path, "metrics.json"))
    raise InputError(f"{path}: no inference/<dataset>/metrics.json and no metrics.json")


def columns(task):
    if task == "both":
        return [(t, k) for t in ("bbox", "segm") for k in GROUP_KEYS]
    return [(task, k) for k in ALL_KEYS]


def format_value(x):
    return "n/a" if x is None or math.isnan(x) else f"{x:.1f}"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("runs", nargs="+", help="OUTPUT_DIRs or metrics.json files")
    parser.add_argument(
        "--task", default="both", choices=["both", "segm", "bbox"],
        help="both: AP, APr, APc, APf of box and mask; segm / bbox: all nine metrics of one",
    )
    parser.add_argument("--plain", action="store_true", help="a plain-text table, not markdown")
    parser.add_argument("--markdown", action="store_true", help="(the default; kept for scripts)")
    parser.add_argument("--plot", metavar="PNG", help="bar chart of AP, APr, APc, APf per run")
    args = parser.parse_args(argv)
    try:
        results = [(run, ds, m) for run in args.runs for ds, m in results_of(run)]
    except (InputError, OSError) as e:
        sys.exit(f"error: {e}")
    several = len({ds for _, ds, _ in results}) > 1
    cols = columns(args.task)
    table = [
        [run, ds] + [format_value(m.get(f"{t}/{k}")) for t, k in cols] for run, ds, m in results
    ]
    print(
        tabulate(
            table,
            headers=["run", "dataset"] + [f"{t} {k}" for t, k in cols],
            tablefmt="simple" if args.plain else "pipe",
            disable_numparse=True,
            colalign=("left", "left") + ("right",) * len(cols),
        )
    )
    if args.plot:
        from longtail_d2.evaluation.plots import group_bars_figure, save

        task = args.task
        if task == "both":
            task = "segm" if all("segm/AP" in m for _, _, m in results) else "bbox"
        labels = [f"{run} [{ds}]" if several else run for run, ds, _ in results]
        save(group_bars_figure(list(zip(labels, (m for _, _, m in results))), task), args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
