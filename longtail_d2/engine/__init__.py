from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY

from ..modeling.roi_heads import FASAROIHeads
from .fasa_adaptation import FASATrainer
from .meta_reweight_trainer import MetaReweightTrainer
from .setup import ConfigError, load_config, prepare_run
from .trainer import LongTailTrainer, ddp_device_kwargs


def trainer_class(cfg):
    """The trainer a config asks for: BALMS's meta re-weighting, FASA's held-out adaptation
    (any ROI heads class that is FASAROIHeads or a subclass), or the standard one."""
    if cfg.META_REWEIGHT.ENABLED:
        return MetaReweightTrainer
    if issubclass(ROI_HEADS_REGISTRY.get(cfg.MODEL.ROI_HEADS.NAME), FASAROIHeads):
        return FASATrainer
    return LongTailTrainer
