"""Sigmoid binary cross-entropy over the C foreground classes (no background logit).

The base of EQL, DropLoss and BALMS: a background RoI has an all-zero target row.
"""

import torch
import torch.nn.functional as F

from .base import ClassificationLoss, append_background, check_logits, one_hot_targets
from .registry import LONGTAIL_LOSS_REGISTRY

__all__ = ["sigmoid_ce_loss", "weighted_bce", "SigmoidCELoss"]


class _WeightedBCESum(torch.autograd.Function):
    """sum_rj w_rj BCE(z_rj, t_rj), the hot path of every sigmoid loss (R x C is about
    1000 x 1200 on LVIS). Same value as F.binary_cross_entropy_with_logits(..., weight=w,
    reduction="sum"), about 3x faster on CPU: that kernel's log1p is not vectorised there, and its
    backward recomputes what sigma(z) gives directly: d/dz = w (sigma(z) - t). Targets and
    weights are constants (see ``weighted_bce`` for weights that need a gradient)."""

    @staticmethod
    def forward(ctx, logits, targets, weights):
        # BCE(z, t) = max(z, 0) - z t + log(1 + exp(-|z|)); log(1 + e) instead of log1p(e)
        # costs < 1e-7 absolute per term. In place: each (R, C) temporary is a page-faulting
        # allocation of several MB.
        loss = logits.abs().neg_().exp_().add_(1).log_()
        loss.add_(logits.clamp(min=0)).addcmul_(logits, targets, value=-1)
        if weights is not None:
            loss.mul_(weights)
        ctx.save_for_backward(logits, targets, weights)
        return loss.sum()

    @staticmethod
    def backward(ctx, grad_output):
        logits, targets, weights = ctx.saved_tensors
        grad = torch.sigmoid(logits).sub_(targets)
        if weights is not None:
            grad.mul_(weights)
        return grad.mul_(grad_output), None, None


def weighted_bce(logits, targets, weights=None):
    """
    Args:
        logits, targets: (R, K); weights: (R, K), (R, 1), (1, K) or None (all ones). Weights that
            require a gradient get one (and then any order of gradient works).
    Returns:
        sum_rj w_rj BCE(z_rj, t_rj) / R; zero (with a gradient) when R = 0.
    """
    num_rois = max(logits.shape[0], 1)
    if weights is not None and weights.requires_grad:
        # Weights that are themselves learnt (BALMS's meta step differentiates through an SGD
        # step, i.e. twice): torch's ops, which support every order of gradient.
        terms = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        return (terms * weights).sum() / num_rois
    if weights is not None:
        weights = weights.expand_as(logits)
    return _WeightedBCESum.apply(logits, targets, weights) / num_rois


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
    has_background_score = False

    def losses(self, logits, gt_classes):
        return {"loss_cls": sigmoid_ce_loss(logits, gt_classes)}

    def scores(self, logits):
        return sigmoid_scores(logits)
