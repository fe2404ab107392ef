#!/usr/bin/env python
"""
detectron2's tools/benchmark.py for longtail_d2 configs: the speed of the training data
loader, of training iterations and of inference, with the config's own trainer pieces (its
sampler, loss and heads). (tools/benchmark.py is something else: a comparison of methods.)

    python tools/d2_benchmark.py --config-file configs/Tiny/mask_rcnn_R_18_FPN_demo.yaml --task data
    python tools/d2_benchmark.py --config-file x.yaml --task train --iters 20
    python tools/d2_benchmark.py --config-file x.yaml --task eval --iters 20 MODEL.WEIGHTS w.pth

train: model + optimizer steps on a few batches held in memory (no data loading time);
eval: model inference per image of DATASETS.TEST[0]; data: batches of the training loader.
Each prints the mean and median seconds per iteration after --warmup iterations.
"""
import argparse
import itertools
import statistics
import time

import longtail_d2  # noqa: F401  (first: quiet start-up, detectron2 check, registrations)
from longtail_d2.engine import prepare_run, trainer_class


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--task", default="train", choices=["train", "eval", "data"])
    parser.add_argument("--iters", type=int, default=20, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser.parse_args(argv)


def timed(step, iters, warmup):
    """Seconds of each of ``iters`` calls of ``step()`` after ``warmup`` untimed ones."""
    import torch

    times = []
    for i in range(warmup + iters):
        start = time.perf_counter()
        step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def benchmark(cfg, task, iters, warmup):
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import build_detection_test_loader
    from detectron2.engine import AMPTrainer, SimpleTrainer

    Trainer = trainer_class(cfg)
    if task == "data":
        loader = iter(Trainer.build_train_loader(cfg))
        return timed(lambda: next(loader), iters, warmup)
    model = Trainer.build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    if task == "train":
        batches = list(itertools.islice(Trainer.build_train_loader(cfg), 4))
        model.train()
        loop = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(
            model, itertools.cycle(batches), Trainer.build_optimizer(cfg, model)
        )
        return timed(loop.run_step, iters, warmup)
    model.eval()
    inputs = itertools.cycle(
        list(itertools.islice(build_detection_test_loader(cfg, cfg.DATASETS.TEST[0]), iters))
    )

    def infer():
        with torch.no_grad():
            model(next(inputs))

    return timed(infer, iters, warmup)


def main(argv=None):
    args = parse_args(argv)
    from detectron2.utils.events import EventStorage

    cfg = prepare_run(args.config_file, args.opts)
    with EventStorage(0):  # training steps log into a storage
        times = benchmark(cfg, args.task, args.iters, args.warmup)
    per = {"train": "training iteration", "eval": "image (inference)", "data": "batch"}[args.task]
    print(
        f"{args.task}: {statistics.mean(times):.4f} s per {per} (mean of {len(times)}; "
        f"median {statistics.median(times):.4f} s) on {cfg.MODEL.DEVICE}"
    )
    return times


if __name__ == "__main__":
    main()
