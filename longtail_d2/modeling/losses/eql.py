"""Equalization Loss (Tan et al., "Equalization Loss for Long-Tailed Object Recognition",
CVPR 2020; reference implementation tztztztztz/eql.detectron2).

On a foreground RoI the negative terms of tail classes are dropped, so frequent classes stop
suppressing the rare ones: w_rj = 1 - E_r T_j (1 - Y_rj), L = (1/R) sum_rj w_rj BCE(z_rj, Y_rj).
Background RoIs keep every term.
"""

import torch
from detectron2.config import configurable

from .base import ClassificationLoss, check_logits
from .registry import LONGTAIL_LOSS_REGISTRY, tail_mask
from .sigmoid_ce import positive_positions, sigmoid_bce, sigmoid_scores

__all__ = ["eql_loss", "EQLLoss"]


def eql_weights(gt_classes, tail_mask, dtype):
    """(R, C) W = 1 - E_r T_j in one pass (the positives are overridden by the caller)."""
    is_fg = (gt_classes < tail_mask.shape[0])[:, None]
    return torch.where(is_fg, (~tail_mask).to(dtype)[None, :], torch.ones((), dtype=dtype))


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
    positions = positive_positions(gt_classes, num_classes)
    weights = eql_weights(gt_classes, tail_mask, logits.dtype)
    # Positive terms are never dropped: weight 1 at (r, y_r).
    return sigmoid_bce(logits, positions, weights, logits.new_ones(positions[0].shape[0]))


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
