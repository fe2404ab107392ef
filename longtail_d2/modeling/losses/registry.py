"""LONGTAIL_LOSS_REGISTRY: classification losses chosen by MODEL.ROI_BOX_HEAD.CLS_LOSS."""

import logging

import numpy as np
import torch
from detectron2.utils.registry import Registry

from ...data import get_class_statistics

__all__ = [
    "LONGTAIL_LOSS_REGISTRY",
    "build_classification_loss",
    "training_statistics",
    "tail_mask",
]

logger = logging.getLogger(__name__)

LONGTAIL_LOSS_REGISTRY = Registry("LONGTAIL_LOSS")
LONGTAIL_LOSS_REGISTRY.__doc__ = """
Classification losses of the box predictor (subclasses of ClassificationLoss). Each is built
with ``cls(cfg)`` (detectron2 ``@configurable``) and declares its logit width and activation.
"""


def build_classification_loss(cfg):
    """The loss named by cfg.MODEL.ROI_BOX_HEAD.CLS_LOSS, built from cfg."""
    return LONGTAIL_LOSS_REGISTRY.get(cfg.MODEL.ROI_BOX_HEAD.CLS_LOSS)(cfg)


def training_statistics(cfg):
    """Class statistics of DATASETS.TRAIN, checked against NUM_CLASSES; None (with a warning)
    when the training annotations cannot be read, e.g. ``--eval-only`` on another machine:
    the statistics buffers then come from the checkpoint."""
    try:
        stats = get_class_statistics(list(cfg.DATASETS.TRAIN))
    except OSError as e:  # only a missing file; training would then fail in its data loader
        logger.warning(
            f"No class statistics of DATASETS.TRAIN ({e}); the loss buffers must "
            "come from MODEL.WEIGHTS"
        )
        return None
    if stats.num_classes != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
        raise ValueError(
            f"MODEL.ROI_HEADS.NUM_CLASSES is {cfg.MODEL.ROI_HEADS.NUM_CLASSES} but "
            f"DATASETS.TRAIN {tuple(cfg.DATASETS.TRAIN)} has {stats.num_classes} classes"
        )
    return stats


def tail_mask(cfg, stats) -> torch.Tensor:
    """
    (C,) bool tail set T of EQL / DropLoss: the classes of the frequency groups in
    MODEL.ROI_BOX_HEAD.TAIL.GROUPS (default r + c: what the published lambda selects on the
    version it was tuned for), or f(c) < lambda when MODEL.ROI_BOX_HEAD.TAIL.LAMBDA > 0.
    """
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if stats is None:
        return torch.zeros(num_classes, dtype=torch.bool)
    lam = cfg.MODEL.ROI_BOX_HEAD.TAIL.LAMBDA
    groups = np.array(stats.frequency)
    if lam > 0:
        mask = stats.image_frequency < lam
        # Pitfall 1 of METHODS.md: a lambda tuned on LVIS v0.5 (0.00177) used on v1 makes 78
        # frequent classes "tail". Say so whenever lambda and the groups disagree.
        if mask[groups == "f"].any() or not mask[groups != "f"].all():
            logger.warning(
                f"TAIL.LAMBDA {lam} selects {int(mask.sum())} tail classes, including "
                f"{int(mask[groups == 'f'].sum())} frequent and missing "
                f"{int((~mask[groups != 'f']).sum())} rare/common ones: lambda values are tuned "
                "per dataset version (0.00177 = r+c on LVIS v0.5, 0.0010062 on v1); "
                "TAIL.GROUPS ('r', 'c') states the intent on any dataset"
            )
    else:
        mask = np.isin(groups, list(cfg.MODEL.ROI_BOX_HEAD.TAIL.GROUPS))
    return torch.as_tensor(mask, dtype=torch.bool)
