"""Pairwise Class Balance (He et al., "Relieving Long-tailed Instance Segmentation via Pairwise
Class Balance", CVPR 2022; reference implementation megvii-research/PCB).

A confusion matrix M (row: ground-truth class, column: predicted class) is kept as an EMA of the
mean predicted distribution of each class's positive RoIs. Once active, the classification loss
of the t-th pass of the iterative box head gets "fight-back" soft targets with weight
alpha_t = alpha t / (T - 1): if class i is often predicted as y, RoIs of y get target mass on i.
Soft targets per base loss (PCB_VARIANTS, keyed by loss class; a subclass inherits its base's):
- SoftmaxCELoss, SeesawLoss: q_r = column y_r of M normalised over rows (P(GT = i | predicted y)),
  rows of M re-normalised after each update;
- EQLv2Loss: Y'_r = alpha_t M[:, y_r] + (1 - alpha_t) onehot(y_r) over the C class channels, with M
  the raw EMA of sigmoid probabilities (no re-normalisation).
"""

from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
from torch import nn

from .distributed import all_reduce_sum
from .losses import EQLv2Loss, SeesawLoss, SoftmaxCELoss

__all__ = ["PairwiseConfusion", "pcb_alphas", "PCBVariant", "PCB_VARIANTS", "pcb_variant"]


class PairwiseConfusion(nn.Module):
    """Buffers ``matrix`` (C, C) and ``seen`` (C,) (positive RoIs of each class so far)."""

    def __init__(self, num_classes: int, momentum: float = 0.99, normalize_rows: bool = True):
        super().__init__()
        self.num_classes, self.momentum, self.normalize_rows = num_classes, momentum, normalize_rows
        self.register_buffer("matrix", torch.zeros(num_classes, num_classes))
        self.register_buffer("seen", torch.zeros(num_classes))

    @torch.no_grad()
    def update(self, probs: torch.Tensor, labels: torch.Tensor):
        """
        Args:
            probs: (P, C) predicted class distribution of each positive RoI.
            labels: (P,) their ground-truth classes in [0, C).
        Sums over all workers first; rows of classes absent from the global batch are left as
        they are (the reference's "non-appear classes" fix).
        """
        C = self.num_classes
        sums = probs.new_zeros(C, C + 1)
        sums[:, :C].index_add_(0, labels, probs.to(sums.dtype))
        sums[:, C].index_add_(0, labels, torch.ones_like(labels, dtype=sums.dtype))
        sums = all_reduce_sum(sums)
        counts = sums[:, C]
        present = counts > 0
        if not present.any():
            return
        batch_mean = sums[present, :C] / counts[present, None]
        rows = self.momentum * self.matrix[present] + (1 - self.momentum) * batch_mean
        if self.normalize_rows:
            rows = rows / rows.sum(dim=1, keepdim=True).clamp(min=1e-12)
        self.matrix[present] = rows.to(self.matrix.dtype)
        self.seen += counts.to(self.seen.dtype)

    def all_seen(self) -> bool:
        return bool((self.seen > 0).all())

    def column_normalized(self) -> torch.Tensor:
        """(C, C) M_ij / sum_i M_ij: column j is P(GT = i | predicted j)."""
        return self.matrix / self.matrix.sum(dim=0, keepdim=True).clamp(min=1e-12)


def pcb_alphas(alpha: float, num_passes: int, active: bool):
    """alpha_t = alpha t / (T - 1) for the T passes of the iterative head; all 0 if inactive."""
    if not active:
        return [0.0] * num_passes
    if num_passes == 1:
        return [alpha]
    return [alpha * t / (num_passes - 1) for t in range(num_passes)]


@dataclass(frozen=True)
class PCBVariant:
    """How PCB plugs into one base loss.

    Attributes:
        probabilities: (P, num_logits) logits -> (P, C) class distribution fed to the matrix.
        normalize_rows: re-normalise updated rows of M to sum to 1.
        loss_kwargs: (confusion, labels (P,), alpha_t) -> keyword arguments of the loss module.
    """

    probabilities: Callable
    normalize_rows: bool
    loss_kwargs: Callable[..., Dict]


def _fight_back(confusion, labels, alpha):
    if alpha == 0:
        return {}
    return {"soft_targets": confusion.column_normalized()[:, labels].t(), "alpha": alpha}


def _eqlv2_targets(confusion, labels, alpha):
    if alpha == 0:
        return {}
    onehot = torch.nn.functional.one_hot(labels, confusion.num_classes).to(confusion.matrix.dtype)
    return {"soft_targets": alpha * confusion.matrix[:, labels].t() + (1 - alpha) * onehot}


def _softmax_classes(logits, num_classes):
    return torch.softmax(logits[:, :num_classes], dim=1)


PCB_VARIANTS = {
    SoftmaxCELoss: PCBVariant(_softmax_classes, True, _fight_back),
    SeesawLoss: PCBVariant(_softmax_classes, True, _fight_back),
    EQLv2Loss: PCBVariant(lambda z, c: torch.sigmoid(z[:, :c]), False, _eqlv2_targets),
}


def pcb_variant(loss_type: type) -> Optional[PCBVariant]:
    """How PCB plugs into a loss class: the variant of the nearest class of its MRO in
    PCB_VARIANTS (so a subclass of a supported loss is supported); None if there is none."""
    return next((PCB_VARIANTS[k] for k in loss_type.__mro__ if k in PCB_VARIANTS), None)
