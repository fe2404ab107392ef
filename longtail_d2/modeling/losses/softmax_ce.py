"""Softmax cross-entropy over C classes + background: detectron2's default, the baseline."""

import torch
import torch.nn.functional as F

from .base import ClassificationLoss
from .registry import LONGTAIL_LOSS_REGISTRY

__all__ = ["SoftmaxCELoss", "softmax_ce_soft_loss"]


def softmax_ce_soft_loss(logits, gt_classes, soft_targets, alpha):
    """
    PCB's softmax loss (Pairwise Class Balance, CVPR 2022): with R RoIs and P positives,
    (1/R) [sum_bg CE + (1 - alpha) sum_fg CE + alpha sum_fg KL(q_r || softmax(z_r))].

    Args:
        logits: (R, C + 1).
        gt_classes: (R,) int64 in [0, C].
        soft_targets: (P, C) target distributions q of the positive RoIs (background mass 0).
        alpha: weight of the soft term.
    """
    num_classes = logits.shape[1] - 1
    is_fg = gt_classes < num_classes
    ce = F.cross_entropy(logits, gt_classes, reduction="none")
    q = torch.cat([soft_targets, soft_targets.new_zeros(soft_targets.shape[0], 1)], dim=1)
    kl = (torch.xlogy(q, q) - q * torch.log_softmax(logits[is_fg], dim=1)).sum()
    return (ce[~is_fg].sum() + (1 - alpha) * ce[is_fg].sum() + alpha * kl) / logits.shape[0]


@LONGTAIL_LOSS_REGISTRY.register()
class SoftmaxCELoss(ClassificationLoss):
    """Mean over RoIs of CE(softmax(z), y); logits (R, C+1); scores = softmax."""

    extra_logits = 1

    def losses(self, logits, gt_classes, soft_targets=None, alpha=0.0):
        if logits.numel() == 0:
            return {"loss_cls": logits.sum() * 0.0}
        if soft_targets is not None and alpha > 0:
            return {"loss_cls": softmax_ce_soft_loss(logits, gt_classes, soft_targets, alpha)}
        return {"loss_cls": F.cross_entropy(logits, gt_classes)}

    def scores(self, logits):
        return torch.softmax(logits, dim=-1)
