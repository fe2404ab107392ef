#!/usr/bin/env python
"""
How often the federated loss's class subset F holds each class (not a test; prints a table).

The config's FederatedLoss (its FED_LOSS_NUM_CLASSES, weights image_count^FED_LOSS_FREQ_WEIGHT_POWER
from the training set's class statistics) draws F for --iterations batches of SOLVER.IMS_PER_BATCH
training images drawn uniformly (no RFS), with the classes of the batch's annotations and the
background as the RoI labels. A class outside F gets no gradient in that iteration, so "in F" is
the fraction of iterations in which its logit is trained at all; "as a negative" is in F without
being in the batch (the only way its logit is pushed down on other classes' objects). Per LVIS
frequency group: the mean over its classes, and the lowest and highest class.

    python benchmarks/federated_sampling.py \\
        --config-file projects/Federated/configs/federated_mask_rcnn_R_18_FPN_demo.yaml \\
        [--iterations 3000] [--seed 0] [KEY VALUE ...]
"""
import argparse
import os
import random
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import longtail_d2  # noqa: F401,E402  # isort: skip  (quiets detectron2's start-up warnings)
import torch  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402
from tabulate import tabulate  # noqa: E402

from longtail_d2.data import training_class_statistics  # noqa: E402
from longtail_d2.engine import prepare_run  # noqa: E402
from longtail_d2.modeling.losses import FederatedLoss  # noqa: E402

GROUPS = (("rare", "r"), ("common", "c"), ("frequent", "f"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--iterations", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("opts", nargs="*", help="KEY VALUE config overrides")
    args = p.parse_args()
    cfg = prepare_run(args.config_file, args.opts)
    stats = training_class_statistics(cfg)
    loss = FederatedLoss(cfg, stats)
    C = loss.num_classes
    image_classes = [
        sorted({a["category_id"] for a in d.get("annotations", [])})
        for name in cfg.DATASETS.TRAIN
        for d in DatasetCatalog.get(name)
    ]
    image_classes = [c for c in image_classes if c]  # detectron2 drops images without boxes
    random.seed(args.seed)
    torch.manual_seed(args.seed)  # detectron2's draw of F uses torch's global generator
    in_fed, present = torch.zeros(C), torch.zeros(C)
    for _ in range(args.iterations):
        batch = random.sample(image_classes, cfg.SOLVER.IMS_PER_BATCH)
        labels = sorted(set().union(*batch))
        fed = loss.fed_classes(torch.tensor(labels + [C]))
        in_fed[fed[fed < C]] += 1
        present[labels] += 1
    in_fed /= args.iterations
    present /= args.iterations
    rows = []
    for name, g in GROUPS:
        idx = [c for c in range(C) if stats.frequency[c] == g]
        if not idx:
            continue
        f = in_fed[idx]
        rows.append(
            [name, len(idx), f"{f.mean():.3f}", f"{f.min():.3f} - {f.max():.3f}",
             f"{present[idx].mean():.3f}", f"{(f - present[idx]).mean():.3f}"]
        )
    print(
        f"F of {loss.num_fed_classes} of {C} classes, {args.iterations} batches of "
        f"{cfg.SOLVER.IMS_PER_BATCH} images of {', '.join(cfg.DATASETS.TRAIN)}, seed {args.seed}:"
    )
    headers = ["group", "classes", "in F", "in F (lowest - highest class)", "in the batch",
               "in F as a negative"]
    print(tabulate(rows, headers=headers, tablefmt="github"))


if __name__ == "__main__":
    main()
