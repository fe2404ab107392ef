#!/usr/bin/env python
"""
Cost of BALMS's meta step in decoupled stage 2 (not a test; prints a table).

Variants, each timed in its own process (so that peak memory is its own), on the tiny config:
  balanced_softmax  decoupled stage 2 without the meta step (detectron2's training loop)
  balms             longtail_d2's meta step: the virtual SGD step differentiates the classifier
                    only, on the RoI features of the two batches
  balms_whole_model the reference implementation's approach: ``higher`` over the whole detector,
                    which is run through its functional copy on the training and meta batches

    python benchmarks/bench_balms.py [--iters 20] [--images 2] [--meta-images 2]

Target: balms at most 1.5x the time of balanced_softmax.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "projects/BALMS/configs/balms_decoupled_R_18_FPN_instant.yaml")
VARIANTS = ("balanced_softmax", "balms", "balms_whole_model")


def build(variant, images, meta_images=None):
    sys.path.insert(0, REPO)
    from longtail_d2.engine import LongTailTrainer, MetaReweightTrainer, prepare_run

    opts = [
        "MODEL.WEIGHTS",
        "",
        "MODEL.DEVICE",
        "cpu",
        "SOLVER.IMS_PER_BATCH",
        str(images),
        "META_REWEIGHT.IMS_PER_BATCH",
        str(meta_images or images),
        "OUTPUT_DIR",
        "/tmp/bench_balms",
        "META_REWEIGHT.ENABLED",
        str(variant != "balanced_softmax"),
    ]
    cfg = prepare_run(CONFIG, opts)
    trainer = (LongTailTrainer if variant == "balanced_softmax" else MetaReweightTrainer)(cfg)
    return trainer._trainer


def whole_model_step(loop):
    """The reference's meta step: a functional copy of the whole detector through ``higher``,
    the losses of both batches computed by the detector (re-weighted through the predictor)."""
    import higher
    import torch

    from longtail_d2.modeling.losses import sigmoid_ce_loss
    from longtail_d2.modeling.meta_reweight import _inner_sgd, balms_loss

    model, learner = loop.model, loop.learner
    predictor = model.roi_heads.box_predictor
    loss_module = predictor.cls_loss
    data = next(loop._data_loader_iter)
    if loop._meta_iter is None:
        loop._meta_iter = iter(loop.meta_loader)
    meta = next(loop._meta_iter)

    def reweighted(weights):  # the predictor's loss, re-weighted by the learner
        return lambda logits, gt: {
            "loss_cls": balms_loss(logits, gt, loss_module.class_freq, weights)
        }

    def plain(logits, gt):  # the meta objective
        return {"loss_cls": sigmoid_ce_loss(logits, gt)}

    inner = _inner_sgd(predictor.cls_score, loop.optimizer)
    with higher.innerloop_ctx(model, inner, copy_initial_weights=False) as (fmodel, diffopt):
        functional_loss = fmodel.roi_heads.box_predictor.cls_loss
        functional_loss.losses = reweighted(learner())
        diffopt.step(sum(fmodel(data).values()))
        functional_loss.losses = plain
        meta_loss = fmodel(meta)["loss_cls"]
        (grad,) = torch.autograd.grad(meta_loss, [learner.theta])
    loop.meta_optimizer.zero_grad()
    learner.theta.grad = grad
    loop.meta_optimizer.step()
    # The real step: the detector again, with the updated weights.
    loss_module.losses = reweighted(learner().detach())
    loss = sum(model(data).values())
    del loss_module.losses
    loop.optimizer.zero_grad()
    loss.backward()
    loop.optimizer.step()


def run_variant(variant, iters, images, meta_images):
    from detectron2.utils.events import EventStorage

    loop = build("balms" if variant == "balms_whole_model" else variant, images, meta_images)
    step = (lambda: whole_model_step(loop)) if variant == "balms_whole_model" else loop.run_step
    parts = time_parts() if variant == "balms" else {}
    times = []
    with EventStorage(0) as storage:
        loop.storage = storage
        for i in range(iters + 3):
            loop.iter = i
            for v in parts.values():
                v.append(0.0)
            start = time.perf_counter()
            step()
            if i >= 3:
                times.append(time.perf_counter() - start)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"variant": variant, "s_per_iter": statistics.median(times), "peak_rss_mb": rss_mb}
    # Where a BALMS iteration goes: medians of the parts, warm-up rounds left out.
    result["parts_ms"] = {k: statistics.median(v[3:]) * 1e3 for k, v in parts.items()}
    print(json.dumps(result))


def time_parts():
    """Wraps the meta-reweight loop's two stages (RoI features of a batch, the meta step) with
    timers that add to the current iteration's entry; returns {part: [seconds per iter]}."""
    from longtail_d2.engine import meta_reweight_trainer as mrt

    parts = {"roi_features (train + meta batch)": [], "meta_step": []}

    def timed(fn, key):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            parts[key][-1] += time.perf_counter() - start
            return out

        return wrapper

    mrt.roi_box_features = timed(mrt.roi_box_features, "roi_features (train + meta batch)")
    mrt.meta_step = timed(mrt.meta_step, "meta_step")
    return parts


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument(
        "--meta-images",
        type=int,
        help="META_REWEIGHT.IMS_PER_BATCH (default: --images, as the reference's meta batch)",
    )
    parser.add_argument("--variant", choices=VARIANTS, help="run one variant (internal)")
    args = parser.parse_args()
    if args.variant:
        return run_variant(args.variant, args.iters, args.images, args.meta_images)

    from tabulate import tabulate

    rows, base = [], None
    for variant in VARIANTS:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--variant",
                variant,
                "--iters",
                str(args.iters),
                "--images",
                str(args.images),
                "--meta-images",
                str(args.meta_images or args.images),
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            rows.append([variant, "failed", "", "", proc.stderr.strip().splitlines()[-1][:80]])
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        base = base or r["s_per_iter"]
        breakdown = ", ".join(f"{k} {v:.0f} ms" for k, v in r["parts_ms"].items())
        rows.append(
            [
                variant,
                f"{r['s_per_iter'] * 1e3:.0f}",
                f"{r['s_per_iter'] / base:.2f}x",
                f"{r['peak_rss_mb']:.0f}",
                breakdown,
            ]
        )
    load = " load average %.2f %.2f %.2f;" % os.getloadavg()
    print(
        f"\nDecoupled stage 2, tiny config, {args.images} training + "
        f"{args.meta_images or args.images} meta images, CPU, median of "
        f"{args.iters} iterations ({load} peak RSS includes the process's Python and torch):"
    )
    print(
        tabulate(
            rows,
            headers=["variant", "ms / iter", "vs no meta", "peak RSS MB", "note"],
            tablefmt="pipe",
        )
    )


if __name__ == "__main__":
    main()
