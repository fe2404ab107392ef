"""LONGTAIL_LOSS_REGISTRY: classification losses chosen by MODEL.ROI_BOX_HEAD.CLS_LOSS."""

import logging

import numpy as np
import torch
from detectron2.utils.registry import Registry

__all__ = ["LONGTAIL_LOSS_REGISTRY", "build_classification_loss", "tail_mask"]

logger = logging.getLogger(__name__)

LONGTAIL_LOSS_REGISTRY = Registry("LONGTAIL_LOSS")
LONGTAIL_LOSS_REGISTRY.__doc__ = """
Classification losses of the box predictor (subclasses of ClassificationLoss). Each is built
with ``cls(cfg, stats)`` (detectron2 ``@configurable``; ``stats`` the ClassStatistics of the
training set) and declares its logit width and activation.
"""


def build_classification_loss(cfg, stats):
    """
    The loss named by cfg.MODEL.ROI_BOX_HEAD.CLS_LOSS.

    Args:
        stats: class statistics of DATASETS.TRAIN (``longtail_d2.data.ClassStatistics``: the
            predictor computes them and hands them over; losses never read a dataset).
    """
    return LONGTAIL_LOSS_REGISTRY.get(cfg.MODEL.ROI_BOX_HEAD.CLS_LOSS)(cfg, stats)


def tail_mask(cfg, stats) -> torch.Tensor:
    """
    (C,) bool tail set T of EQL / DropLoss: the classes of the frequency groups in
    MODEL.ROI_BOX_HEAD.TAIL.GROUPS (default r + c: what the published lambda selects on the
    version it was tuned for), or f(c) < lambda when MODEL.ROI_BOX_HEAD.TAIL.LAMBDA > 0.
    """
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
