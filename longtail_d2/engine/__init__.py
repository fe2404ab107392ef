from .meta_reweight_trainer import MetaReweightTrainer
from .setup import ConfigError, load_config, prepare_run
from .trainer import LongTailTrainer, ddp_device_kwargs


def trainer_class(cfg):
    """The trainer a config asks for: BALMS's meta re-weighting or the standard one."""
    return MetaReweightTrainer if cfg.META_REWEIGHT.ENABLED else LongTailTrainer
