"""Equalization Loss (Tan et al., "Equalization Loss for Long-Tailed Object Recognition",
CVPR 2020; reference implementation tztztztztz/eql.detectron2).

On a foreground RoI the negative terms of tail classes are dropped, so frequent classes stop
suppressing the rare ones: w_rj = 1 - E_r T_j (1 - Y_rj), L = (1/R) sum_rj w_rj BCE(z_rj, Y_rj).
Background RoIs keep every term.
"""

import torch
from detectron2.config import configurable

from .base import ClassificationLoss, check_logits, one_hot_targets
from .registry import LONGTAIL_LOSS_REGISTRY, tail_mask
from .sigmoid_ce import sigmoid_scores, weighted_bce

__all__ = ["eql_loss", "EQLLoss"]


def keep_positives(weights, gt_classes):
    """Sets w[r, y_r] = 1 on foreground rows, in place: positive terms are never dropped."""
    rows = (gt_classes < weights.shape[1]).nonzero()[:, 0]
    weights[rows, gt_classes[rows]] = 1
    return weights


def eql_loss(logits: torch.Tensor, gt_classes: torch.Tensor, tail_mask: torch.Tensor):
    """
    Args:
        logits: (R, C).
        gt_classes: (R,) int64 in [0, C], C = background.
        tail_mask: (C,) bool, T_j.
    Returns:
        scalar loss.
    """
    num_classes = tail_mask.numel()
    check_logits(logits, gt_classes, num_classes, "eql_loss")
    targets = one_hot_targets(gt_classes, num_classes, logits.dtype)
    is_fg = (gt_classes < num_classes).to(logits.dtype)
    # 1 - E_r T_j, then 1 again at (r, y_r). Built in place: this runs on R x C every step.
    weights = torch.outer(is_fg, tail_mask.to(logits.dtype)).neg_().add_(1)
    return weighted_bce(logits, targets, keep_positives(weights, gt_classes))


@LONGTAIL_LOSS_REGISTRY.register()
class EQLLoss(ClassificationLoss):
    """Logits (R, C); scores sigma(z) plus a zero background column. Buffer: the tail set."""

    extra_logits = 0
    uses_prior_prob = True
    has_background_score = False

    @configurable
    def __init__(self, num_classes: int, tail_mask: torch.Tensor):
        super().__init__(num_classes)
        assert tail_mask.shape == (num_classes,), tail_mask.shape
        self.register_buffer("tail_mask", tail_mask.clone())

    @classmethod
    def from_config(cls, cfg, stats):
        return {"num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES, "tail_mask": tail_mask(cfg, stats)}

    def losses(self, logits, gt_classes):
        return {"loss_cls": eql_loss(logits, gt_classes, self.tail_mask)}

    def scores(self, logits):
        return sigmoid_scores(logits)
