"""The trainer of longtail_d2: detectron2's DefaultTrainer with the LVIS evaluator on every
dataset, DistributedDataParallel that also works for CPU processes (gloo), decoupled training
(MODEL.DECOUPLE), atomic checkpoints and exact resume.

Exact resume: the checkpoint holds, besides the model (loss statistics are buffers), optimizer,
scheduler and iteration, the position and seed of every training data loader
(:mod:`longtail_d2.data.resumable_loader`) and the RNG states of every rank
(:class:`longtail_d2.engine.checkpoint.LongTailCheckpointer`); evaluation runs with the RNG
states saved and restored, so that it does not shift the training streams.
"""

import logging
import weakref

from detectron2.data import DatasetMapper, build_detection_test_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..data.named_errors import NamedErrorMapper
from ..data.resumable_loader import ResumableTrainLoader, build_resumable_train_loader
from ..evaluation import build_longtail_evaluator
from ..modeling.decouple import freeze_for_decoupled_training
from .checkpoint import LongTailCheckpointer, capture_rng_states, restore_rng_states

__all__ = ["LongTailTrainer", "ddp_device_kwargs"]

logger = logging.getLogger(__name__)


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
        self.checkpointer = LongTailCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        for name, loader in self.resumable_loaders().items():
            self.checkpointer.add_checkpointable(name, loader)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def resumable_loaders(self):
        """{checkpoint key: loader} of the loop's resumable data loaders (the training loader,
        BALMS's meta loader, ...): any ResumableTrainLoader attribute of the loop."""
        return {
            name.strip("_"): value
            for name, value in sorted(vars(self._trainer).items())
            if isinstance(value, ResumableTrainLoader)
        }

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        if not (resume and self.checkpointer.has_checkpoint()):
            return
        for name, loader in self.resumable_loaders().items():
            if not loader.restored:  # a checkpoint written before loaders were checkpointed
                logger.warning(
                    f"The checkpoint holds no position of the {name}: it restarts at batch "
                    f"{self.start_iter} of its stream; the resumed run is not exact"
                )
                loader.next_batch = self.start_iter

    def build_hooks(self):
        """detectron2's hooks, with the checkpoint hook on every rank: saving gathers the RNG
        states of all ranks (only the main process writes)."""
        ret = super().build_hooks()
        if not comm.is_main_process():
            where = next(i for i, h in enumerate(ret) if isinstance(h, hooks.EvalHook))
            period = self.cfg.SOLVER.CHECKPOINT_PERIOD
            ret.insert(where, hooks.PeriodicCheckpointer(self.checkpointer, period))
        return ret

    @classmethod
    def build_train_loader(cls, cfg):
        """The resumable loader (same samplers, batch size, aspect-ratio grouping and workers
        as detectron2's; see :mod:`longtail_d2.data.resumable_loader`)."""
        return build_resumable_train_loader(cfg)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """detectron2's, with the RNG states restored after it: evaluating during training
        does not change what the training draws next."""
        states = capture_rng_states()
        try:
            return super().test(cfg, model, evaluators)
        finally:
            restore_rng_states(states)

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
    def build_test_loader(cls, cfg, dataset_name):
        """detectron2's test loader whose mapper names the image (file and id) it fails on."""
        mapper = NamedErrorMapper(DatasetMapper(cfg, is_train=False))
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        """The protocol of TEST.EVALUATOR (see :func:`build_longtail_evaluator`)."""
        return build_longtail_evaluator(cfg, dataset_name, output_folder)
