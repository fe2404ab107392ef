#!/usr/bin/env python
"""
Train and evaluate long-tailed instance segmentation models with longtail_d2.

    python train_net.py --config-file configs/Tiny/mask_rcnn_R_18_FPN_demo.yaml
    python train_net.py --config-file x.yaml --num-gpus 8
    python train_net.py --config-file x.yaml --eval-only MODEL.WEIGHTS path/to/model.pth
    python train_net.py --config-file x.yaml --resume
    python train_net.py --config-file x.yaml --num-gpus 2 MODEL.DEVICE cpu   # 2 gloo processes

Config, dataset, image and weights errors are reported in one line, with a non-zero exit,
before anything is written to OUTPUT_DIR (README "What is checked").
"""
import sys

import yaml

# First: longtail_d2's warning filters quiet detectron2's start-up FutureWarnings.
import longtail_d2  # noqa: F401  # isort: skip
from detectron2.engine import default_argument_parser, default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from longtail_d2.data import DatasetError
from longtail_d2.data.register import release_loaded_datasets
from longtail_d2.engine import ConfigError, prepare_run, trainer_class
from longtail_d2.engine.checkpoint import LongTailCheckpointer
from longtail_d2.engine.launch import LaunchError, find_dist_env, launch
from longtail_d2.engine.validation import check_run

USER_ERRORS = (ConfigError, DatasetError, ValueError, OSError, yaml.YAMLError)


def setup(args):
    cfg = prepare_run(args.config_file, args.opts)
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="longtail_d2")
    return cfg


def run(args):
    cfg = setup(args)
    Trainer = trainer_class(cfg)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        # --resume with a corrupt last checkpoint falls back to the newest good one.
        LongTailCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    release_loaded_datasets()  # the train loader has its records; test sets are re-read
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def main(args):
    try:
        return run(args)
    except DatasetError as e:
        # An image that broke after the checks at start, met by a data loader.
        sys.exit(one_line(e))


def num_workers(args):
    """Processes of the run: the world torchrun / srun started, or --num-gpus x --num-machines."""
    try:
        world = find_dist_env()
    except LaunchError:
        world = None  # reported when the run is launched
    return world.world_size if world else args.num_gpus * args.num_machines


def one_line(error):
    text = str(error)
    if "Original Traceback" in text:  # re-raised from a DataLoader worker: its last line
        text = text.strip().splitlines()[-1].split(": ", 1)[-1]
    return "error: " + " ".join(text.split())


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    try:
        # Checked once here, before workers start: bad input fails fast and writes nothing.
        cfg = prepare_run(args.config_file, args.opts)
        check_run(cfg, num_workers(args), eval_only=args.eval_only, resume=args.resume)
    except USER_ERRORS as e:
        sys.exit(one_line(e))
    # The check's copies of the datasets: each worker (or main below) registers its own.
    release_loaded_datasets()
    try:
        # A worker of a world torchrun or srun started (rank from the environment), or None:
        # detectron2 spawns --num-gpus workers (--num-machines, --machine-rank, --dist-url).
        world = find_dist_env()
    except LaunchError as e:
        sys.exit(one_line(e))
    launch(main, args, world)
