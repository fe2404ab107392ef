"""DropLoss (Hsieh et al., "DropLoss for Long-Tail Instance Segmentation", AAAI 2021;
reference implementation timy90022/DropLoss).

EQL on foreground RoIs; on background RoIs the negative term of a tail class is dropped with
probability 1 - rho, rho = fraction of foreground RoIs whose class is tail, drawn independently
per (RoI, class). The official code computes rho per GPU; the module here computes it over the
global batch (all ranks), so results do not depend on the number of GPUs.
"""

from typing import Optional

import torch

from ..distributed import all_reduce_sum
from .base import check_logits, one_hot_targets
from .eql import EQLLoss, keep_positives
from .registry import LONGTAIL_LOSS_REGISTRY
from .sigmoid_ce import weighted_bce

__all__ = ["drop_loss", "tail_ratio_counts", "DropLoss"]


def tail_ratio_counts(gt_classes: torch.Tensor, tail_mask: torch.Tensor) -> torch.Tensor:
    """(2,) float: [#foreground RoIs of a tail class, #foreground RoIs] of this batch."""
    fg = gt_classes < tail_mask.shape[0]
    num_tail = tail_mask[gt_classes[fg]].sum()
    return torch.stack([num_tail, fg.sum()]).to(torch.float32)


def drop_loss(
    logits: torch.Tensor,
    gt_classes: torch.Tensor,
    tail_mask: torch.Tensor,
    ratio: Optional[float] = None,
):
    """
    Args:
        logits: (R, C).
        gt_classes: (R,) int64 in [0, C], C = background.
        tail_mask: (C,) bool, T_j.
        ratio: rho; default: computed from this batch. With no foreground RoI rho is taken as
            1 (every background negative kept), as the official code's NaN comparison does.
    Returns:
        scalar loss. The Bernoulli mask is drawn from torch's global generator, one draw per
        (background RoI, tail class).
    """
    num_classes = tail_mask.numel()
    check_logits(logits, gt_classes, num_classes, "drop_loss")
    if ratio is None:
        num_tail, num_fg = tail_ratio_counts(gt_classes, tail_mask).tolist()
        ratio = num_tail / num_fg if num_fg > 0 else 1.0
    targets = one_hot_targets(gt_classes, num_classes, logits.dtype)
    is_fg = gt_classes < num_classes
    # Foreground rows: EQL (1 - T_j off the true class).
    weights = torch.outer(is_fg.to(logits.dtype), tail_mask.to(logits.dtype)).neg_().add_(1)
    # Background rows: a tail negative is kept where U <= rho, i.e. dropped with probability
    # 1 - rho. Only these (RoI, class) pairs are drawn: the RNG dominates this loss on CPU.
    bg_rows = (~is_fg).nonzero()[:, 0]
    tail_cols = tail_mask.nonzero()[:, 0]
    kept = torch.rand(len(bg_rows), len(tail_cols), device=logits.device).le_(ratio)
    weights[bg_rows[:, None], tail_cols[None, :]] = kept.to(logits.dtype)
    return weighted_bce(logits, targets, keep_positives(weights, gt_classes))


@LONGTAIL_LOSS_REGISTRY.register()
class DropLoss(EQLLoss):
    """EQLLoss's layout, scores and tail-set buffer, with the DropLoss weights."""

    def losses(self, logits, gt_classes):
        num_tail, num_fg = all_reduce_sum(tail_ratio_counts(gt_classes, self.tail_mask)).tolist()
        # rho of the global batch; kept for inspection (it is not state: recomputed every step).
        self.last_ratio = num_tail / num_fg if num_fg > 0 else 1.0
        return {"loss_cls": drop_loss(logits, gt_classes, self.tail_mask, self.last_ratio)}
