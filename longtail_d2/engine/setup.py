"""Building the config of a run and checking it before anything is written to OUTPUT_DIR."""

import logging

import torch
from detectron2.config import get_cfg
from detectron2.utils.logger import log_first_n

from ..config import add_longtail_config
from ..data import register_datasets_from_config
from .meta_reweight_trainer import meta_reweight_config_problems
from .validation import ConfigError, check_config_values

__all__ = ["ConfigError", "load_config", "prepare_run"]

logger = logging.getLogger(__name__)


def _message(error):
    text = error.args[0] if error.args else repr(error)
    return " ".join(str(text).split())


def load_config(config_file: str, opts=()):
    """get_cfg + longtail_d2 keys + the YAML file + ``KEY VALUE`` overrides, frozen."""
    cfg = get_cfg()
    add_longtail_config(cfg)
    # yacs reports unknown keys as KeyError or AssertionError and wrong types as ValueError.
    try:
        if config_file:
            cfg.merge_from_file(config_file)
    except (KeyError, AssertionError, ValueError) as e:
        raise ConfigError(f"{config_file}: {_message(e)}") from None
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, AssertionError, ValueError) as e:
        raise ConfigError(f"command-line override: {_message(e)}") from None
    # Ranges, LR steps, device and registry names: before the device fallback below and before
    # any dataset is read or generated.
    check_config_values(cfg)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        # once per process: train_net.py loads the config before and after launching
        log_first_n(
            logging.WARNING,
            f"MODEL.DEVICE is {cfg.MODEL.DEVICE!r} but no GPU is visible: using the CPU",
            name=__name__,
        )
        cfg.MODEL.DEVICE = "cpu"
    if cfg.SOLVER.AMP.ENABLED and not cfg.MODEL.DEVICE.startswith("cuda"):
        raise ConfigError("SOLVER.AMP.ENABLED True needs a GPU (MODEL.DEVICE cuda)")
    if cfg.META_REWEIGHT.ENABLED and meta_reweight_config_problems(cfg):
        raise ConfigError(
            "META_REWEIGHT.ENABLED needs " + "; ".join(meta_reweight_config_problems(cfg))
        )
    cfg.freeze()
    return cfg


def prepare_run(config_file: str, opts=()):
    """The config with its datasets registered (and the generated one created if absent)."""
    cfg = load_config(config_file, opts)
    register_datasets_from_config(cfg)
    return cfg
