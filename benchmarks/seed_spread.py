#!/usr/bin/env python
"""
Where the seed std of a group's AP comes from, over the finished runs of a benchmark folder
(tools/benchmark.py's <output>/<method>/seed<k>; not a test, prints tables).

A group's AP is the mean of its classes' AP, so its seed variance is (sum of the classes' seed
variances + their covariances) / k^2 for k classes. "if independent" is the std the classes'
own spreads give when they vary independently (sqrt(sum of variances) / k, falling as
1 / sqrt(k)); "covariance" is the rest of the variance, large when a seed moves the whole group
together. The per-class seed std includes the evaluation's sampling of the split's images.

With --bootstrap FOLDER (FOLDER/<method>/seed<k>/bootstrap.json, from tools/evaluate.py
--bootstrap N --output FOLDER/<method>/seed<k> on each run's results, the same --bootstrap-seed
for all), the group AP's seed variance is split further into the part that depends on which
images the evaluation split holds ("evaluation part", which falls as 1 / its number of images)
and the rest ("training part"), and "std, 4x images" is what the seed std would be on a split
four times as large.

    python benchmarks/seed_spread.py output/benchmark/long900 --dataset longtail_synth_test \\
        [--methods softmax sigmoid] [--seeds 0 1 2 3 4] [--group r] [--task segm] [--per-class] \\
        [--bootstrap output/bootstrap/long900]
"""
import argparse
import json
import math
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
from tabulate import tabulate  # noqa: E402

from longtail_d2.benchmark import (  # noqa: E402
    evaluation_seed_variance,
    group_seed_spread,
    read_per_category_ap,
)

GROUP_NAMES = {"r": "rare", "c": "common", "f": "frequent"}


def _seeds(method_dir):
    found = [re.fullmatch(r"seed(\d+)", d) for d in os.listdir(method_dir)]
    return sorted(int(m.group(1)) for m in found if m)


def _methods(root):
    folders = [d for d in sorted(os.listdir(root)) if os.path.isdir(os.path.join(root, d))]
    return [d for d in folders if _seeds(os.path.join(root, d))]


def _resampled(folder, method, seeds, task, metric):
    """[seeds, N] of ``metric`` over the bootstrap resamples of each seed, or None if a seed has
    no bootstrap.json; an error if the seeds' resamples differ."""
    rows, draws = [], set()
    for seed in seeds:
        path = os.path.join(folder, method, f"seed{seed}", "bootstrap.json")
        if not os.path.isfile(path):
            print(f"{method}: no {path}, no bootstrap columns")
            return None
        with open(path) as f:
            boot = json.load(f)[task]
        draws.add((boot["seed"], boot["num_samples"], boot["num_images"]))
        rows.append(boot["samples"][metric])
    if len(draws) > 1:
        raise SystemExit(f"{folder}/{method}: the seeds' bootstraps drew different resamples "
                         f"(seed, N, images): {sorted(draws)}")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("root", help="a tools/benchmark.py output folder")
    p.add_argument("--dataset", required=True, help="the evaluated split, e.g. longtail_synth_test")
    p.add_argument("--methods", nargs="+", help="default: every method folder under root")
    p.add_argument("--seeds", nargs="+", type=int, help="default: every evaluated seed")
    p.add_argument("--group", choices=sorted(GROUP_NAMES), default="r")
    p.add_argument("--task", choices=("segm", "bbox"), default="segm")
    p.add_argument("--per-class", action="store_true", help="also each class's AP in each seed")
    p.add_argument("--bootstrap", metavar="FOLDER", help="FOLDER/<method>/seed<k>/bootstrap.json")
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
        row = [
            method, s["seeds"], s["classes"], s["mean"], s["std"],
            float(np.sqrt(np.mean(s["class_std"] ** 2))), float(s["class_std"].max()),
            s["independent_std"], s["covariance_var"],
        ]
        if args.bootstrap:
            resampled = _resampled(args.bootstrap, method, seeds, args.task, f"AP{args.group}")
            if resampled is None:
                row += [math.nan] * 3
            else:
                evaluation = evaluation_seed_variance(resampled)
                training = max(s["std"] ** 2 - evaluation, 0.0)
                at_4x = math.sqrt(training + evaluation / 4)
                row += [math.sqrt(evaluation), math.sqrt(training), at_4x]
        rows.append(row)
        if args.per_class:
            ap = np.asarray(per_seed, float)  # [seeds, classes]
            table = [
                [c["id"], c["name"], c.get("image_count")] + ap[:, j].tolist()
                + [float(ap[:, j].std(ddof=1))]
                for j, c in enumerate(classes)
            ]
            headers = ["id", "name", "train images"] + [f"seed {k}" for k in seeds] + ["seed std"]
            text = tabulate(table, headers, floatfmt=".1f", tablefmt="pipe")
            details.append(f"\n{method}\n{text}")
    group = f"{args.task} AP{args.group}"
    headers = [
        "method", "seeds", f"{GROUP_NAMES[args.group]} classes", group, "seed std",
        "class seed std (rms)", "(max)", "std if independent", "covariance part (var)",
    ]
    if args.bootstrap:
        headers += ["evaluation part", "training part", "std, 4x images"]
    print(f"Seed spread of {group} on {args.dataset} ({args.root})")
    print(tabulate(rows, headers, floatfmt=".2f", tablefmt="pipe"))
    for text in details:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
