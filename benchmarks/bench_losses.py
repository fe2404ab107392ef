#!/usr/bin/env python
"""
Speed of the classification losses (not a test; prints tables).

1. Forward + backward of each loss at LVIS scale (default 1024 RoIs x 1203 classes) against
   plain softmax cross-entropy. Target: at most 2x.
2. One training iteration of the tiny config per method against the softmax baseline.
   Target: at most 3% slower (PCB's iterative head runs the box head three times by design).

    python benchmarks/bench_losses.py [--rois 1024] [--classes 1203] [--iters 20] [--train-iters 30]
                                      [--threads 2] [--skip-training]

The header gives the load average: other processes on the machine slow every entry, and with
more busy threads than cores each parallel kernel also waits for its threads to be scheduled.
"""
import argparse
import os
import statistics
import sys
import time

import torch
from tabulate import tabulate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from longtail_d2.modeling.losses import (  # noqa: E402
    BalancedSoftmaxLoss,
    DropLoss,
    EQLLoss,
    EQLv2Loss,
    FederatedLoss,
    SeesawLoss,
    SigmoidCELoss,
    SoftmaxCELoss,
)

METHOD_CONFIGS = {
    "SoftmaxCELoss": None,
    "SigmoidCELoss": None,
    "EQLLoss": "projects/EQL/configs/eql_mask_rcnn_R_18_FPN_instant.yaml",
    "DropLoss": "projects/DropLoss/configs/droploss_mask_rcnn_R_18_FPN_instant.yaml",
    "EQLv2Loss": "projects/EQLv2/configs/eqlv2_mask_rcnn_R_18_FPN_instant.yaml",
    "SeesawLoss": "projects/Seesaw/configs/seesaw_mask_rcnn_R_18_FPN_instant.yaml",
    "BalancedSoftmaxLoss": (
        "projects/BalancedSoftmax/configs/balanced_softmax_mask_rcnn_R_18_FPN_instant.yaml"
    ),
    "FederatedLoss": "projects/Federated/configs/federated_mask_rcnn_R_18_FPN_instant.yaml",
    "SoftmaxCELoss + PCB (3 passes)": (
        "projects/PCB/configs/softmax_pcb_mask_rcnn_R_18_FPN_instant.yaml"
    ),
    # Per-iteration cost only: the periodic held-out pass is FASA's other, separate cost.
    "SoftmaxCELoss + FASA": "projects/FASA/configs/fasa_mask_rcnn_R_18_FPN_instant.yaml",
}


def loss_modules(C):
    tail = torch.rand(C) < 0.75
    freq = torch.rand(C).clamp(min=1e-4)
    return {
        "SoftmaxCELoss": SoftmaxCELoss(num_classes=C),
        "SigmoidCELoss": SigmoidCELoss(num_classes=C),
        "EQLLoss": EQLLoss(num_classes=C, tail_mask=tail),
        "DropLoss": DropLoss(num_classes=C, tail_mask=tail),
        "EQLv2Loss": EQLv2Loss(num_classes=C),
        "SeesawLoss": SeesawLoss(num_classes=C),
        "BalancedSoftmaxLoss": BalancedSoftmaxLoss(num_classes=C, class_freq=freq),
        "FederatedLoss": FederatedLoss(
            num_classes=C, class_weights=freq * 1000, num_fed_classes=50
        ),
    }


def loss_step(module, R, device):
    """A closure running one forward + backward of ``module`` on fixed LVIS-like inputs."""
    module.train().to(device)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(R, module.num_logits, generator=g).to(device).requires_grad_(True)
    gt = torch.randint(0, module.num_classes, (R,), generator=g).to(device)
    gt[: R * 3 // 4] = module.num_classes  # 25% foreground, as detectron2 samples

    def step():
        logits.grad = None
        sum(module(logits, gt).values()).backward()

    return step


def interleaved_medians(steps, rounds, device):
    """Median time of each step, measured in interleaved rounds so that machine noise (other
    processes, frequency changes) hits every entry alike."""
    times = {name: [] for name in steps}
    for r in range(rounds + 3):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if r >= 3:  # warm-up rounds
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_losses(args, device):
    steps = {n: loss_step(m, args.rois, device) for n, m in loss_modules(args.classes).items()}
    medians = interleaved_medians(steps, args.iters, device)
    base = medians["SoftmaxCELoss"]
    rows = [[n, f"{t * 1e3:.2f}", f"{t / base:.2f}x"] for n, t in medians.items()]
    load = ", load average %.2f %.2f %.2f" % os.getloadavg() if hasattr(os, "getloadavg") else ""
    print(
        f"\nForward + backward, {args.rois} RoIs x {args.classes} classes, {device}, "
        f"{torch.get_num_threads()} threads (median of {args.iters} interleaved rounds{load}):"
    )
    print(tabulate(rows, headers=["loss", "ms", "vs softmax CE"], tablefmt="pipe"))


def bench_bernoulli(args, device):
    """DropLoss's mask: bernoulli_mask against torch.rand(...) < p, one (R, C) draw each."""
    from longtail_d2.modeling.losses.bernoulli import bernoulli_mask

    shape = (args.rois, args.classes)
    steps = {
        "torch.rand(R, C) < p": lambda: torch.rand(shape, device=device) < 0.3,
        "bernoulli_mask((R, C), p)": lambda: bernoulli_mask(shape, 0.3, device),
    }
    medians = interleaved_medians(steps, args.iters, device)
    rows = [[n, f"{t * 1e3:.2f}"] for n, t in medians.items()]
    print(f"\nBernoulli mask of {args.rois} x {args.classes}, {device}:")
    print(tabulate(rows, headers=["draw", "ms"], tablefmt="pipe"))


def bench_training(args):
    from detectron2.data import build_detection_train_loader
    from detectron2.modeling import build_model
    from detectron2.solver import build_optimizer
    from detectron2.utils.events import EventStorage

    from longtail_d2.engine import prepare_run

    instant = os.path.join(REPO, "configs/Tiny/mask_rcnn_R_18_FPN_instant.yaml")
    steps = {}
    for name, config in METHOD_CONFIGS.items():
        opts = ["MODEL.DEVICE", args.device]
        if config is None:
            opts += [
                "MODEL.ROI_HEADS.NAME",
                "LongTailROIHeads",
                "MODEL.ROI_BOX_HEAD.CLS_LOSS",
                name,
            ]
        cfg = prepare_run(os.path.join(REPO, config) if config else instant, opts)
        torch.manual_seed(0)
        model = build_model(cfg)
        optimizer = build_optimizer(cfg, model)
        loader = iter(build_detection_train_loader(cfg))
        data = [next(loader) for _ in range(4)]  # the same batches for every method, no loading

        def step(model=model, optimizer=optimizer, data=data, count=[0]):
            losses = model(data[count[0] % len(data)])
            count[0] += 1
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()

        steps[name] = step
    with EventStorage():
        medians = interleaved_medians(steps, args.train_iters, torch.device(args.device))
    base = medians["SoftmaxCELoss"]
    rows = [[n, f"{t * 1e3:.1f}", f"{(t / base - 1) * 100:+.1f}%"] for n, t in medians.items()]
    print(
        f"\nOne training iteration of the tiny config ({cfg.SOLVER.IMS_PER_BATCH} images of "
        f"{cfg.INPUT.MIN_SIZE_TEST} px, {args.device}, median of {args.train_iters} interleaved "
        "rounds):"
    )
    print(tabulate(rows, headers=["loss", "ms / iter", "vs softmax CE"], tablefmt="pipe"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rois", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=1203)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--train-iters", type=int, default=30)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench_losses(args, torch.device(args.device))
    bench_bernoulli(args, torch.device(args.device))
    if not args.skip_training:
        bench_training(args)
