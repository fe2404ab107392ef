#!/usr/bin/env python
"""
Does a class's AP in a run follow how often, or how late, that run's training stream showed it
its images? (Not a test, prints tables.) For each run folder (``config.yaml`` and
``inference/<dataset>/per_category_ap.json``, e.g. tools/benchmark.py's <output>/<method>/seed<k>)
the training stream is replayed from its config (sampler, data seed, batches; no image is read),
and over the runs each class's deviation from its mean AP is set against its deviation in
images seen, images seen from the first LR step on, and the last iteration that showed one:

    python benchmarks/class_exposure.py output/benchmark/wide/sigmoid/seed{0,1,2,3,4} \\
        --dataset longtail_synth_test [--group r] [--task segm] [--per-class]

A correlation near 0 says the runs' differences in that group do not come from exposure.
"""
import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import longtail_d2  # noqa: E402,F401  (quiet start-up, registrations)
import numpy as np  # noqa: E402
from detectron2.data import MetadataCatalog, get_detection_dataset_dicts  # noqa: E402
from tabulate import tabulate  # noqa: E402

from longtail_d2.benchmark import read_per_category_ap  # noqa: E402
from longtail_d2.data.class_exposure import class_exposure  # noqa: E402
from longtail_d2.data.resumable_loader import resolve_seed  # noqa: E402
from longtail_d2.engine import prepare_run  # noqa: E402
from longtail_d2.evaluation.reports import GROUP_NAMES  # noqa: E402

FEATURES = ("images seen", "seen from the first LR step", "last iteration seen")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders with config.yaml and an evaluation")
    p.add_argument("--dataset", required=True, help="the evaluated split, e.g. longtail_synth_test")
    p.add_argument("--group", choices=sorted(GROUP_NAMES), default="r")
    p.add_argument("--task", choices=("segm", "bbox"), default="segm")
    p.add_argument("--per-class", action="store_true", help="also each class in each run")
    return p, p.parse_args(argv)


def run_exposure(run):
    """(data seed, {dataset category id: (seen, seen late, last iteration)}) of a run folder."""
    cfg = prepare_run(os.path.join(run, "config.yaml"))
    train = cfg.DATASETS.TRAIN
    dicts = get_detection_dataset_dicts(train, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    late_from = cfg.SOLVER.STEPS[0] if cfg.SOLVER.STEPS else cfg.SOLVER.MAX_ITER
    exposure = class_exposure(cfg, dicts, num_classes, late_from)
    to_contiguous = MetadataCatalog.get(train[0]).thing_dataset_id_to_contiguous_id
    return resolve_seed(cfg), {cid: exposure[c] for cid, c in to_contiguous.items()}


def main(argv=None):
    p, args = parse_args(argv)
    key = f"{args.task}/AP"
    runs, summary, details = [], [], []
    for run in args.runs:
        if not os.path.isfile(os.path.join(run, "config.yaml")):
            p.error(f"{run}: no config.yaml (not a run folder)")
        cats = read_per_category_ap(run, args.dataset)
        if cats is None:
            p.error(f"{run}: no per-category AP on {args.dataset}")
        seed, exposure = run_exposure(run)
        cats = sorted((c for c in cats if c["frequency"] == args.group), key=lambda c: c["id"])
        ap = np.array([np.nan if c.get(key) is None else c[key] for c in cats], float)
        features = np.array([exposure[c["id"]] for c in cats], float)  # [classes, 3]
        runs.append((ap, features))
        summary.append([run, seed, float(np.nanmean(ap)), *features[:, :2].sum(0), features[:, 2].mean()])
        if args.per_class:
            table = [[c["id"], c["name"], a, *f] for c, a, f in zip(cats, ap, features.astype(int))]
            text = tabulate(table, ["id", "name", key, *FEATURES], floatfmt=".1f", tablefmt="pipe")
            details.append(f"\n{run} (data seed {seed})\n{text}")
    group = GROUP_NAMES[args.group]
    headers = ["run", "data seed", f"{args.task} AP{args.group}", f"{group} images seen",
               "from the first LR step", "mean last iteration"]
    print(f"Exposure of the {group} classes in each run's training stream ({args.dataset})")
    print(tabulate(summary, headers, floatfmt=".1f", tablefmt="pipe"))
    for text in details:
        print(text)
    if len(runs) < 2:
        return 0
    ap = np.stack([r[0] for r in runs])  # [runs, classes]
    features = np.stack([r[1] for r in runs])  # [runs, classes, 3]
    keep = np.isfinite(ap).all(0)
    ap_dev = (ap - ap.mean(0))[:, keep].ravel()
    rows = []
    for j, name in enumerate(FEATURES):
        dev = (features[..., j] - features[..., j].mean(0))[:, keep].ravel()
        corr = np.corrcoef(dev, ap_dev)[0, 1] if dev.std() > 0 and ap_dev.std() > 0 else np.nan
        rows.append([name, corr])
    print(f"\nCorrelation over {len(runs)} runs x {int(keep.sum())} {group} classes of a class's "
          f"deviation from its mean over the runs: {key} against")
    print(tabulate(rows, ["exposure", "correlation"], floatfmt=".2f", tablefmt="pipe"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
