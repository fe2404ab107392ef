"""Sigmoid binary cross-entropy over the C foreground classes (no background logit).

The base of EQL, DropLoss and BALMS: a background RoI has an all-zero target row.
"""

import torch
import torch.nn.functional as F
from detectron2.config import configurable

from .base import ClassificationLoss, append_background, check_logits, one_hot_targets
from .registry import LONGTAIL_LOSS_REGISTRY

__all__ = ["sigmoid_ce_loss", "weighted_bce", "SigmoidCELoss"]


def weighted_bce(logits, targets, weights=None):
    """sum_rj w_rj * BCE(z_rj, t_rj) / R; zero (with a gradient) when R = 0."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if weights is not None:
        loss = loss * weights
    return loss.sum() / max(logits.shape[0], 1)


def sigmoid_ce_loss(logits: torch.Tensor, gt_classes: torch.Tensor) -> torch.Tensor:
    """
    Args:
        logits: (R, C).
        gt_classes: (R,) int64 in [0, C], C = background.
    Returns:
        (1/R) sum_r sum_j BCE(z_rj, 1[y_r = j]).
    """
    check_logits(logits, gt_classes, logits.shape[1], "sigmoid_ce_loss")
    return weighted_bce(logits, one_hot_targets(gt_classes, logits.shape[1], logits.dtype))


def sigmoid_scores(logits):
    """sigma(z) for each class, with an appended zero background column: (R, C + 1)."""
    return append_background(torch.sigmoid(logits))


@LONGTAIL_LOSS_REGISTRY.register()
class SigmoidCELoss(ClassificationLoss):
    """Logits (R, C); scores sigma(z) plus a zero background column."""

    extra_logits = 0
    uses_prior_prob = True

    @configurable
    def __init__(self, num_classes: int):
        super().__init__(num_classes)

    @classmethod
    def from_config(cls, cfg):
        return {"num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES}

    def losses(self, logits, gt_classes):
        return {"loss_cls": sigmoid_ce_loss(logits, gt_classes)}

    def scores(self, logits):
        return sigmoid_scores(logits)
