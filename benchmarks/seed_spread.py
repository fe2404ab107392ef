#!/usr/bin/env python
"""
Where the seed std of a group's AP comes from, over the finished runs of a benchmark folder
(tools/benchmark.py's <output>/<method>/seed<k>; not a test, prints tables).

A group's AP is the mean of its classes' AP, so its seed variance is (sum of the classes' seed
variances + their covariances) / k^2 for k classes. "if independent" is the std the classes'
own spreads give when they vary independently (sqrt(sum of variances) / k, falling as
1 / sqrt(k)); "covariance" is the rest of the variance, large when a seed moves the whole group
together. The per-class seed std includes the evaluation's sampling of the split's images.

    python benchmarks/seed_spread.py output/benchmark/long900 --dataset longtail_synth_test \\
        [--methods softmax sigmoid] [--seeds 0 1 2 3 4] [--group r] [--task segm] [--per-class]
"""
import argparse
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
from tabulate import tabulate  # noqa: E402

from longtail_d2.benchmark import group_seed_spread, read_per_category_ap  # noqa: E402

GROUP_NAMES = {"r": "rare", "c": "common", "f": "frequent"}


def _seeds(method_dir):
    found = [re.fullmatch(r"seed(\d+)", d) for d in os.listdir(method_dir)]
    return sorted(int(m.group(1)) for m in found if m)


def _methods(root):
    return sorted(
        d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and _seeds(os.path.join(root, d))
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("root", help="a tools/benchmark.py output folder")
    p.add_argument("--dataset", required=True, help="the evaluated split, e.g. longtail_synth_test")
    p.add_argument("--methods", nargs="+", help="default: every method folder under root")
    p.add_argument("--seeds", nargs="+", type=int, help="default: every evaluated seed")
    p.add_argument("--group", choices=sorted(GROUP_NAMES), default="r")
    p.add_argument("--task", choices=("segm", "bbox"), default="segm")
    p.add_argument("--per-class", action="store_true", help="also each class's AP in each seed")
    args = p.parse_args(argv)
    if not os.path.isdir(args.root):
        p.error(f"{args.root}: no such folder")
    key = f"{args.task}/AP"
    rows, details = [], []
    for method in args.methods or _methods(args.root):
        method_dir = os.path.join(args.root, method)
        if not os.path.isdir(method_dir):
            p.error(f"{method_dir}: no such folder (method {method!r})")
        seeds, per_seed, classes = [], [], None
        for seed in args.seeds or _seeds(method_dir):
            cats = read_per_category_ap(os.path.join(method_dir, f"seed{seed}"), args.dataset)
            if cats is None:
                continue
            cats = sorted((c for c in cats if c["frequency"] == args.group), key=lambda c: c["id"])
            seeds.append(seed)
            per_seed.append([np.nan if c.get(key) is None else c[key] for c in cats])
            classes = cats
        if len(seeds) < 2 or not classes:
            print(f"{method}: {len(seeds)} seed(s) evaluated on {args.dataset}, skipped")
            continue
        s = group_seed_spread(per_seed)
        rows.append([
            method, s["seeds"], s["classes"], s["mean"], s["std"],
            float(np.sqrt(np.mean(s["class_std"] ** 2))), float(s["class_std"].max()),
            s["independent_std"], s["covariance_var"],
        ])
        if args.per_class:
            table = [
                [c["id"], c["name"], c.get("image_count")] + [per_seed[i][j] for i in range(len(seeds))]
                + [float(np.std([per_seed[i][j] for i in range(len(seeds))], ddof=1))]
                for j, c in enumerate(classes)
            ]
            headers = ["id", "name", "train images"] + [f"seed {k}" for k in seeds] + ["seed std"]
            details.append(f"\n{method}\n" + tabulate(table, headers, floatfmt=".1f", tablefmt="pipe"))
    group = f"{args.task} AP{args.group}"
    headers = [
        "method", "seeds", f"{GROUP_NAMES[args.group]} classes", group, "seed std",
        "class seed std (rms)", "(max)", "std if independent", "covariance part (var)",
    ]
    print(f"Seed spread of {group} on {args.dataset} ({args.root})")
    print(tabulate(rows, headers, floatfmt=".2f", tablefmt="pipe"))
    for text in details:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
