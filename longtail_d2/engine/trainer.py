"""The trainer of longtail_d2: detectron2's DefaultTrainer with the LVIS evaluator on every
dataset, DistributedDataParallel that also works for CPU processes (gloo), and decoupled
training (MODEL.DECOUPLE)."""

import logging
import os
import weakref

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.engine.defaults import create_ddp_model
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..evaluation import LongTailLVISEvaluator
from ..modeling.decouple import freeze_for_decoupled_training

__all__ = ["LongTailTrainer", "ddp_device_kwargs"]


def ddp_device_kwargs(cfg):
    """DistributedDataParallel rejects ``device_ids`` for CPU modules; detectron2 always sets it."""
    return {} if cfg.MODEL.DEVICE.startswith("cuda") else {"device_ids": None}


class LongTailTrainer(DefaultTrainer):
    def __init__(self, cfg):
        # DefaultTrainer.__init__, except for the DDP device ids (CPU multi-process training).
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = self.wrap_model(cfg, model)
        self._trainer = self.build_train_loop(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def wrap_model(self, cfg, model):
        """DistributedDataParallel when there are several workers."""
        return create_ddp_model(model, broadcast_buffers=False, **ddp_device_kwargs(cfg))

    def build_train_loop(self, cfg, model, data_loader, optimizer):
        """The object whose ``run_step`` does one iteration (detectron2's by default)."""
        return (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(
            model, data_loader, optimizer
        )

    @classmethod
    def build_model(cls, cfg):
        model = super().build_model(cfg)
        if cfg.MODEL.DECOUPLE.ENABLED:
            freeze_for_decoupled_training(model, cfg.MODEL.DECOUPLE.TRAINABLE)
        return model

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return LongTailLVISEvaluator(
            dataset_name,
            output_folder,
            tasks=("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",),
            max_dets_per_image=cfg.TEST.LVIS_MAX_DETS_PER_IMAGE,
        )
