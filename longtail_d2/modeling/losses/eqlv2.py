"""Equalization Loss v2 (Tan et al., "Equalization Loss v2: A New Gradient Balance Approach
for Long-tailed Object Detection", CVPR 2021; reference implementation tztztztztz/eqlv2).

Sigmoid BCE over C classes plus a background ("objectness") channel, re-weighted per class from
the accumulated ratio g_j = P_j / Q_j of positive to negative gradient magnitudes:
r_j = 1 / (1 + exp(-gamma (g_j - mu))) on negatives, q_j = 1 + alpha (1 - r_j) on positives,
1 on the background channel. The official code all-reduces the increments of P and Q; so does
the module here, through a helper that is a no-op in one process (the official one crashes).
"""

from typing import Optional, Tuple

import torch
from detectron2.config import configurable

from ..distributed import all_reduce_sum
from .base import ClassificationLoss, check_logits, one_hot_targets
from .registry import LONGTAIL_LOSS_REGISTRY
from .sigmoid_ce import _SigmoidBCE, positive_positions, weighted_bce

__all__ = ["eqlv2_loss", "eqlv2_class_weights", "EQLv2Loss"]

# g of the official code before any update (its buffers start at P = Q = 0 with g = 100).
_INITIAL_RATIO = 100.0


def eqlv2_class_weights(pos_grad, neg_grad, gamma=12.0, mu=0.8, alpha=4.0):
    """(C,) positive weights q and negative weights r from the accumulated gradients. A class
    with P = Q = 0 has had no update yet (any RoI adds to every Q), so it gets g = 100."""
    first_step = (pos_grad == 0) & (neg_grad == 0)
    ratio = torch.where(
        first_step, torch.full_like(pos_grad, _INITIAL_RATIO), pos_grad / (neg_grad + 1e-10)
    )
    neg_w = torch.sigmoid(gamma * (ratio - mu))
    pos_w = 1 + alpha * (1 - neg_w)
    return pos_w, neg_w


def eqlv2_loss(
    logits: torch.Tensor,
    gt_classes: torch.Tensor,
    pos_grad: torch.Tensor,
    neg_grad: torch.Tensor,
    gamma: float = 12.0,
    mu: float = 0.8,
    alpha: float = 4.0,
    soft_targets: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    Args:
        logits: (R, C + 1), the last column is the background channel.
        gt_classes: (R,) int64 in [0, C], C = background.
        pos_grad, neg_grad: (C,) accumulated P and Q before this step.
        soft_targets: PCB (see longtail_d2.modeling.pcb): (P, C) targets Y' of the P positive
            RoIs over the C class channels, which replace the one-hot rows in the loss, the
            weights and the gradient statistics.
    Returns:
        loss: (1/R) sum_r sum_{j<=C} W_rj BCE(z_rj, Y_rj), W = q Y + r (1 - Y) (1 on bg channel).
        pos_grad_increment, neg_grad_increment: (C,) sum_r |sigma(z) - Y| Y W and
            sum_r |sigma(z) - Y| (1 - Y) W over this batch (no gradient).
    """
    num_classes = pos_grad.numel()
    check_logits(logits, gt_classes, num_classes + 1, "eqlv2_loss")
    pos_w, neg_w = eqlv2_class_weights(
        pos_grad.to(logits.dtype), neg_grad.to(logits.dtype), gamma, mu, alpha
    )
    one = pos_w.new_ones(1)
    pos_w, neg_w = torch.cat([pos_w, one]), torch.cat([neg_w, one])
    if soft_targets is not None:
        targets = one_hot_targets(gt_classes, num_classes + 1, logits.dtype)
        return _eqlv2_soft(logits, gt_classes, targets, soft_targets, pos_w, neg_w)
    # W = r on every term (one (1, C + 1) row), q at (r, y_r): no (R, C + 1) weights or
    # targets. The statistics come from the sigma(z) that the backward reuses.
    rows, cols = positive_positions(gt_classes, num_classes + 1)
    loss, pos_inc, neg_inc = _SigmoidBCE.apply(
        logits, rows, cols, neg_w[None, :], pos_w[cols], True
    )
    return loss, pos_inc[:num_classes], neg_inc[:num_classes]


def _eqlv2_soft(logits, gt_classes, targets, soft_targets, pos_w, neg_w):
    """The dense form for soft targets: W = q Y' + r (1 - Y'), statistics with Y'."""
    num_classes = pos_w.numel() - 1
    targets = targets.clone()
    targets[gt_classes < num_classes, :num_classes] = soft_targets.to(targets.dtype)
    weights = neg_w[None, :] + (pos_w - neg_w)[None, :] * targets
    loss = weighted_bce(logits, targets, weights)
    with torch.no_grad():
        grad = (torch.sigmoid(logits) - targets).abs_().mul_(weights)
        pos_inc = (grad * targets).sum(0)
        neg_inc = (grad * (1 - targets)).sum(0)
    return loss, pos_inc[:num_classes], neg_inc[:num_classes]


@LONGTAIL_LOSS_REGISTRY.register()
class EQLv2Loss(ClassificationLoss):
    """
    Logits (R, C + 1); scores sigma(z_j) (1 - sigma(z_bg)) with sigma(z_bg) as background
    (the official test_with_obj). Buffers: pos_grad, neg_grad (C,), summed over all ranks.
    """

    extra_logits = 1
    uses_prior_prob = True
    has_running_statistics = True

    @configurable
    def __init__(self, num_classes: int, gamma: float = 12.0, mu: float = 0.8, alpha: float = 4.0):
        super().__init__(num_classes)
        self.gamma, self.mu, self.alpha = gamma, mu, alpha
        self.register_buffer("pos_grad", torch.zeros(num_classes))
        self.register_buffer("neg_grad", torch.zeros(num_classes))

    @classmethod
    def from_config(cls, cfg, stats):
        c = cfg.MODEL.ROI_BOX_HEAD.EQLV2
        return {
            "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "gamma": c.GAMMA,
            "mu": c.MU,
            "alpha": c.ALPHA,
        }

    def losses(self, logits, gt_classes, soft_targets=None):
        loss, pos_inc, neg_inc = eqlv2_loss(
            logits,
            gt_classes,
            self.pos_grad,
            self.neg_grad,
            self.gamma,
            self.mu,
            self.alpha,
            soft_targets,
        )
        if self.updates_statistics:
            increments = all_reduce_sum(torch.stack([pos_inc, neg_inc]).to(self.pos_grad.dtype))
            self.pos_grad += increments[0]
            self.neg_grad += increments[1]
        return {"loss_cls": loss}

    def scores(self, logits):
        probs = torch.sigmoid(logits)
        return torch.cat([probs[:, :-1] * (1 - probs[:, -1:]), probs[:, -1:]], dim=1)
