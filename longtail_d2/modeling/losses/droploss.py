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
from .base import check_logits
from .eql import EQLLoss, eql_weights
from .registry import LONGTAIL_LOSS_REGISTRY
from .sigmoid_ce import positive_positions, sigmoid_bce

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
    positions = positive_positions(gt_classes, num_classes)
    # Foreground rows: EQL (1 - T_j off the true class).
    weights = eql_weights(gt_classes, tail_mask, logits.dtype)
    # Background rows: a tail negative is kept where U <= rho, i.e. dropped with probability
    # 1 - rho. Only these (RoI, class) pairs are drawn: the RNG dominates this loss on CPU.
    bg_rows = (gt_classes >= num_classes).nonzero()[:, 0]
    tail_cols = tail_mask.nonzero()[:, 0]
    kept = torch.rand(len(bg_rows), len(tail_cols), device=logits.device).le_(ratio)
    # Whole-row and whole-column copies (index_copy_) rather than a 2-D scatter.
    bg_weights = weights.new_ones(len(bg_rows), num_classes)
    bg_weights.index_copy_(1, tail_cols, kept.to(logits.dtype))
    weights.index_copy_(0, bg_rows, bg_weights)
    # Positive terms are never dropped: weight 1 at (r, y_r).
    return sigmoid_bce(logits, positions, weights, logits.new_ones(positions[0].shape[0]))


@LONGTAIL_LOSS_REGISTRY.register()
class DropLoss(EQLLoss):
    """EQLLoss's layout, scores and tail-set buffer, with the DropLoss weights."""

    def losses(self, logits, gt_classes):
        num_tail, num_fg = all_reduce_sum(tail_ratio_counts(gt_classes, self.tail_mask)).tolist()
        # rho of the global batch; kept for inspection (it is not state: recomputed every step).
        self.last_ratio = num_tail / num_fg if num_fg > 0 else 1.0
        return {"loss_cls": drop_loss(logits, gt_classes, self.tail_mask, self.last_ratio)}
