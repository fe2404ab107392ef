#!/usr/bin/env python
"""
How a training stage changed the classification layer, per frequency group (rare / common /
frequent; not a test, prints a table): the mean over the group's classes of the weight vector's
norm ratio |w_after| / |w_before| (a rescaling of the class's scores, which keeps the order of its
detections), its cosine (below 1: the order can change), the bias and the norm |w| before and
after. E.g. a decoupled stage 2 against its stage 1:

    python benchmarks/classifier_change.py \\
        --config-file output/benchmark/wide/balanced_softmax_decoupled/seed0/config.yaml \\
        --before output/benchmark/wide/sigmoid_rfs/seed0/model_final.pth \\
        --after output/benchmark/wide/balanced_softmax_decoupled/seed0/model_final.pth

The groups come from the class statistics of the config's DATASETS.TRAIN.
"""
import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import longtail_d2  # noqa: E402,F401  (quiet start-up, registrations)
import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

from longtail_d2.data import training_class_statistics  # noqa: E402
from longtail_d2.engine import prepare_run  # noqa: E402
from longtail_d2.evaluation.classifier_change import (  # noqa: E402
    CLASSIFIER_KEYS,
    classifier_change,
    classifier_change_by_group,
)
from longtail_d2.evaluation.loss_gradients import GROUP_NAMES  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--before", required=True, metavar="PTH", help="checkpoint before")
    parser.add_argument("--after", required=True, metavar="PTH", help="checkpoint after")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser.parse_args(argv)


def load_classifier(path, num_classes):
    """(C, D) weight and (C,) bias of the checkpoint's classifier, a background row dropped."""
    model = torch.load(path, map_location="cpu", weights_only=False)
    model = model.get("model", model)
    missing = [k for k in CLASSIFIER_KEYS if k not in model]
    if missing:
        sys.exit(f"{path}: no {missing[0]} (a one-stage classifier head is needed)")
    weight, bias = (model[k] for k in CLASSIFIER_KEYS)
    if weight.shape[0] not in (num_classes, num_classes + 1):
        sys.exit(
            f"{path}: {CLASSIFIER_KEYS[0]} has {weight.shape[0]} rows; MODEL.ROI_HEADS.NUM_CLASSES "
            f"is {num_classes} (C or C + 1 with background expected)"
        )
    return weight[:num_classes], bias[:num_classes]


def main(argv=None):
    args = parse_args(argv)
    for path in (args.before, args.after):
        if not os.path.isfile(path):
            sys.exit(f"{path}: no such file")
    cfg = prepare_run(args.config_file, list(args.opts))
    stats = training_class_statistics(cfg)
    if stats.is_placeholder:
        sys.exit(f"DATASETS.TRAIN {tuple(cfg.DATASETS.TRAIN)}: no annotations readable, so no groups")
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    before = load_classifier(args.before, num_classes)
    after = load_classifier(args.after, num_classes)
    report = classifier_change_by_group(classifier_change(*before, *after), stats.frequency)
    rows = [
        [GROUP_NAMES[g], r["classes"], r["norm_ratio"], r["cosine"], r["bias_before"],
         r["bias_after"], r["norm_before"], r["norm_after"]]
        for g, r in report.items()
    ]
    headers = ["group", "classes", "|w_after| / |w_before|", "cosine", "bias before", "bias after",
               "|w_before|", "|w_after|"]
    print(f"Classifier change {args.before} -> {args.after} (mean over each group's classes)")
    print(tabulate(rows, headers=headers, tablefmt="pipe", floatfmt=".3f"))


if __name__ == "__main__":
    main()
