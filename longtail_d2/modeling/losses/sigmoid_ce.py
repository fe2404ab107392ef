"""Sigmoid binary cross-entropy over the C foreground classes (no background logit).

The base of EQL, DropLoss and BALMS: a background RoI has an all-zero target row.
"""

import torch
import torch.nn.functional as F

from .base import ClassificationLoss, append_background, check_logits
from .registry import LONGTAIL_LOSS_REGISTRY

__all__ = [
    "sigmoid_ce_loss",
    "sigmoid_bce",
    "positive_positions",
    "weighted_bce",
    "SigmoidCELoss",
]


def positive_positions(gt_classes: torch.Tensor, num_classes: int):
    """(rows, cols) of the positive terms: foreground RoIs r (label < num_classes) and y_r."""
    rows = (gt_classes < num_classes).nonzero()[:, 0]
    return rows, gt_classes[rows]


def _weighted_sum(x, weights):
    """sum_rj W_rj x_rj without an (R, K) product: BLAS mv / dot reduce as they read."""
    if weights is None:
        return x.sum()
    if weights.shape[0] == 1 and x.shape[0] != 1:  # (1, K): per class
        return torch.mv(x, weights[0]).sum()
    if weights.shape[1] == 1 and x.shape[1] != 1:  # (R, 1): per RoI
        return torch.mv(x.t(), weights[:, 0]).sum()
    return torch.dot(x.reshape(-1), weights.expand_as(x).reshape(-1))


class _SigmoidBCE(torch.autograd.Function):
    """
    (1/R) sum_rj W_rj BCE(z_rj, Y_rj) with a one-hot Y given by its positions, the hot path of
    every sigmoid loss (R x K is about 1000 x 1200 on LVIS). Saved for backward: the logits, the
    positions and the weights as given ((1, K), (R, 1) or (R, K)), never an (R, K) target:
        forward   BCE = softplus(z) - z Y, so the loss is sum W softplus(z) (one mv / dot)
                  minus the P positive terms W z;
        backward  d/dz = W (sigma(z) - Y) / R: sigma(z) scaled in place, the P positives
                  overwritten.
    Optionally (EQL v2) also the per-column sums of |sigma(z) - Y| W on the positive and on
    the other terms, from the sigma(z) that backward then reuses (no extra pass); weights
    must then be (1, K) or None.
    Inputs other than the logits are constants (see ``weighted_bce`` for learnt weights).
    """

    @staticmethod
    def forward(ctx, logits, rows, cols, weights, pos_weights, with_stats):
        num_rois = max(logits.shape[0], 1)
        # W at the positives: the broadcast weights there, unless pos_weights (P,) overrides.
        if weights is None:
            w_at = logits.new_ones(rows.shape[0])
        else:
            w_at = weights.expand_as(logits)[rows, cols]
        pos_w = w_at if pos_weights is None else pos_weights
        z_pos = logits[rows, cols]
        # F.softplus is one vectorised kernel (log1p(exp(z)) would be two, and log1p is
        # not vectorised on CPU); for z > 20 it returns z, off by < 3e-9.
        softplus = F.softplus(logits)
        total = _weighted_sum(softplus, weights)
        total = total + ((pos_w - w_at) * softplus[rows, cols]).sum() - (pos_w * z_pos).sum()
        sig = None
        if with_stats:
            sig = torch.sigmoid(logits)
            sig_pos = sig[rows, cols]
            # Zero the positives before summing columns: a difference of sums would cancel the
            # tiny negative terms of rare classes.
            sig[rows, cols] = 0
            neg = sig.sum(0)
            if weights is not None:  # (1, K): per-class weights factor out of the column sums
                neg = neg * weights[0]
            sig[rows, cols] = sig_pos
            pos = neg.new_zeros(logits.shape[1]).index_add_(0, cols, (1 - sig_pos) * pos_w)
        ctx.save_for_backward(logits, rows, cols, weights, pos_w, z_pos, sig)
        loss = total / num_rois
        if with_stats:
            ctx.mark_non_differentiable(pos, neg)
            return loss, pos, neg
        return loss

    @staticmethod
    def backward(ctx, grad_output, *unused):
        logits, rows, cols, weights, pos_w, z_pos, sig = ctx.saved_tensors
        scale = grad_output / max(logits.shape[0], 1)
        # One multiplier for sigma(z): small weights absorb the 1/R scale; dense ones cost a
        # second in-place pass.
        if weights is None:
            factor, rest = scale, None
        elif weights.numel() < logits.numel():
            factor, rest = weights * scale, None
        else:
            factor, rest = weights, scale
        grad = torch.sigmoid(logits).mul_(factor) if sig is None else sig * factor
        if rest is not None:
            grad.mul_(rest)
        grad[rows, cols] = (pos_w * scale) * (torch.sigmoid(z_pos) - 1)
        return grad, None, None, None, None, None


def sigmoid_bce(logits, positions, weights=None, pos_weights=None):
    """
    Args:
        logits: (R, K).
        positions: (rows, cols) of the positive terms (``positive_positions``); Y = 0 elsewhere.
        weights: constant (1, K), (R, 1), (R, K) or None (all ones).
        pos_weights: constant (P,) weights of the positive terms, or None (``weights`` there).
    Returns:
        (1/R) sum_rj W_rj BCE(z_rj, Y_rj); zero (with a gradient) when R = 0.
    """
    rows, cols = positions
    if weights is not None:
        weights = weights.to(logits.dtype)
    if pos_weights is not None:
        pos_weights = pos_weights.to(logits.dtype)
    return _SigmoidBCE.apply(logits, rows, cols, weights, pos_weights, False)


class _WeightedBCESum(torch.autograd.Function):
    """sum_rj w_rj BCE(z_rj, t_rj) with dense targets (PCB's soft targets). Same value as
    F.binary_cross_entropy_with_logits(..., weight=w, reduction="sum"), about 3x faster on CPU:
    that kernel's log1p is not vectorised there, and its backward recomputes what sigma(z) gives
    directly: d/dz = w (sigma(z) - t). Targets and weights are constants (see ``weighted_bce``
    for weights that need a gradient)."""

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
    return sigmoid_bce(logits, positive_positions(gt_classes, logits.shape[1]))


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
