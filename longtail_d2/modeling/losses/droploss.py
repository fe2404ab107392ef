"""DropLoss (Hsieh et al., "DropLoss for Long-Tail Instance Segmentation", AAAI 2021;
reference implementation timy90022/DropLoss).

EQL on foreground RoIs; on background RoIs the negative term of a tail class is dropped with
probability 1 - rho, rho = fraction of foreground RoIs whose class is tail, drawn independently
per (RoI, class). The official code computes rho per GPU; the module here computes it over the
global batch (all ranks), so results do not depend on the number of GPUs.
"""

from typing import Optional

import numpy as np
import torch

from ..distributed import all_reduce_sum
from .base import check_logits
from .bernoulli import bernoulli_mask
from .eql import EQLLoss
from .registry import LONGTAIL_LOSS_REGISTRY
from .sigmoid_ce import positive_positions, sigmoid_bce

__all__ = ["drop_loss", "drop_weights", "tail_ratio_counts", "DropLoss"]


def tail_ratio_counts(gt_classes: torch.Tensor, tail_mask: torch.Tensor) -> torch.Tensor:
    """(2,) float: [#foreground RoIs of a tail class, #foreground RoIs] of this batch."""
    fg = gt_classes < tail_mask.shape[0]
    num_tail = tail_mask[gt_classes[fg]].sum()
    return torch.stack([num_tail, fg.sum()]).to(torch.float32)


def drop_weights(gt_classes, tail_mask, ratio, logits):
    """
    (R, C) W in the dtype of ``logits`` (R, C): 1 - T_j on foreground rows (EQL); on background
    rows 1 for head classes and, for a tail class, 1 where U < rho (kept), else 0 (dropped).
    One (R, C) draw rather than only the (background, tail) pairs: W is then a few boolean
    passes, with no scatter.
    """
    is_bg = gt_classes >= tail_mask.numel()
    kept = bernoulli_mask(logits.shape, ratio, logits.device)
    if kept.device.type == "cpu":
        # numpy's in-place boolean passes and cast take ~20 % less of the loss's time here.
        mask = kept.numpy()
        mask &= is_bg.numpy()[:, None]
        mask |= ~tail_mask.numpy()[None]
        return torch.from_numpy(mask.astype(np.float32)).to(logits.dtype)
    return kept.logical_and_(is_bg[:, None]).logical_or_(~tail_mask[None]).to(logits.dtype)


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
        scalar loss. The Bernoulli mask (``bernoulli_mask``) is seeded by torch's global
        generator.
    """
    num_classes = tail_mask.numel()
    check_logits(logits, gt_classes, num_classes, "drop_loss")
    if ratio is None:
        num_tail, num_fg = tail_ratio_counts(gt_classes, tail_mask).tolist()
        ratio = num_tail / num_fg if num_fg > 0 else 1.0
    positions = positive_positions(gt_classes, num_classes)
    weights = drop_weights(gt_classes, tail_mask, ratio, logits)
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
