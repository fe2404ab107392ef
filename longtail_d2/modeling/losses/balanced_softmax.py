"""Balanced Softmax, sigmoid variant: ``BalancedSigmoidLoss`` (Ren et al., "Balanced Meta-Softmax
for Long-Tailed Visual Recognition", NeurIPS 2020; reference implementation of BALMS for instance
segmentation).

On foreground RoIs every logit is shifted by the log-odds of its class's image frequency,
z'_j = z_j + log(pi_j / (1 - pi_j)), before a sigmoid BCE; background RoIs are unchanged, and
inference uses the unshifted logits (the shift models the training label prior only).
"""

from typing import Optional

import torch
import torch.nn.functional as F
from detectron2.config import configurable

from .base import ClassificationLoss, check_logits
from .registry import LONGTAIL_LOSS_REGISTRY
from .sigmoid_ce import positive_positions, sigmoid_bce, sigmoid_scores

__all__ = [
    "balanced_sigmoid_loss",
    "balanced_logits",
    "BalancedSigmoidLoss",
    "BalancedSoftmaxLoss",
]

# pi is clamped into [FREQ_EPS, 1 - FREQ_EPS]: a class in every (or no) training image would
# otherwise get an infinite shift.
FREQ_EPS = 1e-6


def balanced_logits(logits, gt_classes, class_freq):
    """(R, C) logits with log(pi / (1 - pi)) added on foreground rows."""
    pi = class_freq.to(logits.dtype).clamp(FREQ_EPS, 1 - FREQ_EPS)
    shift = torch.log(pi) - torch.log1p(-pi)
    is_fg = (gt_classes < logits.shape[1]).to(logits.dtype)
    return torch.addr(logits, is_fg, shift)


def balanced_sigmoid_loss(
    logits: torch.Tensor,
    gt_classes: torch.Tensor,
    class_freq: torch.Tensor,
    roi_weights: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """
    Args:
        logits: (R, C).
        gt_classes: (R,) int64 in [0, C], C = background.
        class_freq: (C,) image-count frequency pi in (0, 1].
        roi_weights: optional (R,) weight of each RoI's loss (BALMS's meta re-weighting).
    Returns:
        (1/R) sum_r v_r sum_j BCE(z'_rj, Y_rj), v = roi_weights or 1.
    """
    num_classes = class_freq.numel()
    check_logits(logits, gt_classes, num_classes, "balanced_sigmoid_loss")
    shifted = balanced_logits(logits, gt_classes, class_freq)
    positions = positive_positions(gt_classes, num_classes)
    if roi_weights is not None and roi_weights.requires_grad:
        # BALMS's meta step differentiates through the weights and the gradient (higher's
        # virtual step): torch's ops, which support every order of gradient, per RoI.
        rows, cols = positions
        per_roi = F.softplus(shifted).sum(1).index_add(0, rows, -shifted[rows, cols])
        return (per_roi * roi_weights.to(logits.dtype)).sum() / max(logits.shape[0], 1)
    weights = None if roi_weights is None else roi_weights.to(logits.dtype)[:, None]
    return sigmoid_bce(shifted, positions, weights)


@LONGTAIL_LOSS_REGISTRY.register()
class BalancedSigmoidLoss(ClassificationLoss):
    """Logits (R, C); scores sigma(z) (unshifted) plus a zero background column.
    Buffer: class_freq (C,), the image frequency of each class in DATASETS.TRAIN."""

    extra_logits = 0
    uses_prior_prob = True
    has_background_score = False

    @configurable
    def __init__(self, num_classes: int, class_freq: torch.Tensor):
        super().__init__(num_classes)
        assert class_freq.shape == (num_classes,), class_freq.shape
        self.register_buffer("class_freq", class_freq.clone().float())

    @classmethod
    def from_config(cls, cfg, stats):
        # The statistics placeholder (eval-only elsewhere) has f = 1/2: no shift until the
        # checkpoint's buffer loads.
        freq = torch.as_tensor(stats.image_frequency)
        return {"num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES, "class_freq": freq}

    @property
    def class_frequency(self):
        return self.class_freq

    def losses(self, logits, gt_classes):
        return {"loss_cls": balanced_sigmoid_loss(logits, gt_classes, self.class_freq)}

    def scores(self, logits):
        return sigmoid_scores(logits)


# The name of the paper and of the first releases. The loss is the *sigmoid* variant, hence the
# new name; configs with CLS_LOSS "BalancedSoftmaxLoss" keep working (the same class).
BalancedSoftmaxLoss = BalancedSigmoidLoss
LONGTAIL_LOSS_REGISTRY._do_register("BalancedSoftmaxLoss", BalancedSigmoidLoss)
