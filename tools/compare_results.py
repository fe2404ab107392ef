#!/usr/bin/env python
"""
Table of LVIS results of several runs, read from their metrics.json files.

    python tools/compare_results.py output/demo output/EQL/eql_mask_rcnn_R_18_FPN_demo ...
    python tools/compare_results.py --task bbox --markdown output/*/*_demo

Each argument is an OUTPUT_DIR (every OUTPUT_DIR/inference/<dataset>/metrics.json is read) or a
metrics.json file.
"""
import argparse
import glob
import json
import os
import sys

from tabulate import tabulate

KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")


def metrics_files(path):
    if os.path.isfile(path):
        return [path]
    files = sorted(glob.glob(os.path.join(path, "inference", "*", "metrics.json")))
    if not files:
        sys.exit(f"error: no inference/<dataset>/metrics.json under {path}")
    return files


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("runs", nargs="+", help="OUTPUT_DIRs or metrics.json files")
    parser.add_argument("--task", default="segm", choices=["segm", "bbox"])
    parser.add_argument("--markdown", action="store_true", help="a GitHub table")
    args = parser.parse_args(argv)
    rows = []
    for run in args.runs:
        for path in metrics_files(run):
            with open(path) as f:
                metrics = json.load(f)
            dataset = os.path.basename(os.path.dirname(path))
            rows.append(
                [run, dataset] + [metrics.get(f"{args.task}/{k}", float("nan")) for k in KEYS]
            )
    print(
        tabulate(
            rows,
            headers=["run", "dataset"] + [f"{args.task} {k}" for k in KEYS],
            floatfmt=".1f",
            tablefmt="pipe" if args.markdown else "simple",
        )
    )


if __name__ == "__main__":
    main()
