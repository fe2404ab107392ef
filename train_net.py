#!/usr/bin/env python
"""
Train and evaluate long-tailed instance segmentation models with longtail_d2.

    python train_net.py --config-file configs/Tiny/mask_rcnn_R_18_FPN_demo.yaml
    python train_net.py --config-file x.yaml --num-gpus 8
    python train_net.py --config-file x.yaml --eval-only MODEL.WEIGHTS path/to/model.pth
    python train_net.py --config-file x.yaml --resume
    python train_net.py --config-file x.yaml --num-gpus 2 MODEL.DEVICE cpu   # 2 gloo processes

Config and dataset errors are reported in one line, with a non-zero exit, before anything is
written to OUTPUT_DIR.
"""
import os
import sys

import yaml
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from longtail_d2.data import DatasetError
from longtail_d2.engine import ConfigError, prepare_run, trainer_class
from longtail_d2.engine.launch import LaunchError, find_dist_env, launch

USER_ERRORS = (ConfigError, DatasetError, ValueError, OSError, yaml.YAMLError)


def setup(args):
    cfg = prepare_run(args.config_file, args.opts)
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="longtail_d2")
    return cfg


def main(args):
    cfg = setup(args)
    Trainer = trainer_class(cfg)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def check_weights(cfg, args):
    """A missing local MODEL.WEIGHTS file fails here, unless --resume finds a checkpoint."""
    weights = cfg.MODEL.WEIGHTS
    resumable = args.resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    if weights and "://" not in weights and not os.path.isfile(weights) and not resumable:
        raise FileNotFoundError(f"MODEL.WEIGHTS: {weights} not found")


def one_line(error):
    return "error: " + " ".join(str(error).split())


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    try:
        # Checked once here, before workers start: bad input fails fast and writes nothing.
        check_weights(prepare_run(args.config_file, args.opts), args)
    except USER_ERRORS as e:
        sys.exit(one_line(e))
    try:
        # A worker of a world torchrun or srun started (rank from the environment), or None:
        # detectron2 spawns --num-gpus workers (--num-machines, --machine-rank, --dist-url).
        world = find_dist_env()
    except LaunchError as e:
        sys.exit(one_line(e))
    launch(main, args, world)
