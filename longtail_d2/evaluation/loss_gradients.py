"""Where a classification loss's gradient goes.

d loss / d logits of the RoIs the box head trains on, summed per frequency group of the classes
(rare / common / frequent) and split into three parts:

    positive  |g| at (RoI r, its class y_r): what pulls a class's score up on its own RoIs;
    neg_fg    |g| at (foreground RoI r, class j != y_r): other classes' RoIs pushing j down
              (the term EQL and DropLoss remove for tail classes);
    neg_bg    |g| at (background RoI r, class j): background pushing j down (DropLoss removes
              a random 1 - rho of it for tail classes, EQL keeps it).

Each loss is compared with sigmoid BCE's gradient on the same logits: the fraction of BCE's
negative mass that the loss removes ("suppressed fraction"). Pure functions on tensors;
``tools/loss_gradients.py`` runs them on a trained model's training batches.
"""

from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "GROUPS",
    "GROUP_NAMES",
    "MASS_PARTS",
    "group_index",
    "logit_gradients",
    "bce_logit_gradients",
    "gradient_masses",
    "roi_counts",
    "background_score_sums",
    "group_report",
]

GROUPS = ("r", "c", "f")
GROUP_NAMES = {"r": "rare", "c": "common", "f": "frequent"}
# Rows of gradient_masses.
MASS_PARTS = ("positive", "neg_fg", "neg_bg")


def group_index(frequency: Sequence[str]) -> torch.Tensor:
    """(C,) int64 index into GROUPS of each class's LVIS group ("r", "c" or "f")."""
    return torch.as_tensor([GROUPS.index(g) for g in frequency], dtype=torch.int64)


def logit_gradients(loss_fn: Callable, logits: torch.Tensor, gt_classes: torch.Tensor):
    """
    Args:
        loss_fn: (logits, gt_classes) -> a scalar or a dict of scalars (a ClassificationLoss
            returns {"loss_cls": ...}; several entries are summed, as the trainer does).
        logits: (R, K) classifier outputs.
        gt_classes: (R,) int64 in [0, C], C = background.
    Returns:
        (R, K) d loss / d logits, taken on a detached copy (the caller's graph is untouched);
        zeros where the loss does not depend on a logit.
    """
    z = logits.detach().clone().requires_grad_(True)
    out = loss_fn(z, gt_classes)
    loss = sum(out.values()) if isinstance(out, dict) else out
    (grad,) = torch.autograd.grad(loss, z, allow_unused=True)
    return torch.zeros_like(z) if grad is None else grad


def bce_logit_gradients(logits: torch.Tensor, gt_classes: torch.Tensor, num_classes: int):
    """
    The reference: sigmoid BCE (1/R) sum_rj BCE(z_rj, 1[y_r = j]) over the first C columns
    (torch's own ``binary_cross_entropy_with_logits``, not longtail_d2's kernels).

    Args:
        logits: (R, K), K >= C; columns from C on (background / objectness channels) are unused.
        gt_classes: (R,) int64 in [0, C].
    Returns:
        (R, C) d BCE / d logits = (sigma(z) - Y) / R.
    """

    def bce(z, gt):
        target = torch.zeros_like(z)
        fg = (gt < num_classes).nonzero()[:, 0]
        target[fg, gt[fg]] = 1
        return F.binary_cross_entropy_with_logits(z, target, reduction="sum") / max(len(z), 1)

    return logit_gradients(bce, logits[:, :num_classes], gt_classes)


def gradient_masses(grad: torch.Tensor, gt_classes: torch.Tensor, group_of_class: torch.Tensor):
    """
    Args:
        grad: (R, K) d loss / d logits, K >= C; columns from C on are not counted.
        gt_classes: (R,) int64 in [0, C], C = background.
        group_of_class: (C,) int64 index into GROUPS (:func:`group_index`).
    Returns:
        (3, G) float64, rows MASS_PARTS, column g summing |grad| over the classes j of group g:
            positive: (r, j) with y_r = j;
            neg_fg:   foreground r with y_r != j;
            neg_bg:   background r.
    """
    num_classes = group_of_class.numel()
    mag = grad[:, :num_classes].detach().abs().double()
    fg = gt_classes < num_classes
    rows = fg.nonzero()[:, 0]
    is_pos = torch.zeros_like(mag, dtype=torch.bool)
    is_pos[rows, gt_classes[rows]] = True
    per_class = torch.stack(
        [
            (mag * is_pos).sum(0),
            (mag * (~is_pos & fg[:, None])).sum(0),
            mag[~fg].sum(0),
        ]
    )  # (3, C)
    out = per_class.new_zeros(3, len(GROUPS))
    return out.index_add_(1, group_of_class.to(out.device), per_class)


def roi_counts(gt_classes: torch.Tensor, group_of_class: torch.Tensor) -> torch.Tensor:
    """(G + 1,) int64: foreground RoIs whose class is in each group, then background RoIs."""
    num_classes = group_of_class.numel()
    fg = gt_classes < num_classes
    counts = torch.bincount(
        group_of_class.to(gt_classes.device)[gt_classes[fg]], minlength=len(GROUPS)
    )
    return torch.cat([counts, (~fg).sum().reshape(1)]).cpu()


def background_score_sums(
    scores: torch.Tensor, gt_classes: torch.Tensor, group_of_class: torch.Tensor
) -> torch.Tensor:
    """
    Args:
        scores: (R, K) test scores, K >= C (sigma(z) for the sigmoid losses).
        gt_classes: (R,) int64 in [0, C].
        group_of_class: (C,) int64.
    Returns:
        (G,) float64: sum over background RoIs r and classes j of group g of scores[r, j]
        (divide by #bg RoIs x #classes of g for the mean: false-positive pressure).
    """
    num_classes = group_of_class.numel()
    per_class = scores[gt_classes >= num_classes, :num_classes].double().sum(0)
    out = per_class.new_zeros(len(GROUPS))
    return out.index_add_(0, group_of_class.to(out.device), per_class).cpu()


def _ratio(num: float, den: float) -> Optional[float]:
    """num / den, None (no value: strict JSON) when den is 0."""
    return num / den if den > 0 else None


def group_report(masses: torch.Tensor, bce_masses: torch.Tensor) -> Dict[str, dict]:
    """
    Args:
        masses, bce_masses: (3, G) :func:`gradient_masses` of a loss and of sigmoid BCE on the
            same logits (summed over batches).
    Returns:
        {group: {positive, neg_fg, neg_bg, removed_fg, removed_bg, neg_over_pos}}: the masses,
        the fraction of BCE's negative mass the loss removes per source (1 - loss / BCE; < 0
        when the loss adds to it) and (neg_fg + neg_bg) / positive; None where undefined.
    """
    report = {}
    for g, group in enumerate(GROUPS):
        pos, neg_fg, neg_bg = (float(v) for v in masses[:, g])
        _, bce_fg, bce_bg = (float(v) for v in bce_masses[:, g])
        kept_fg, kept_bg = _ratio(neg_fg, bce_fg), _ratio(neg_bg, bce_bg)
        report[group] = {
            "positive": pos,
            "neg_fg": neg_fg,
            "neg_bg": neg_bg,
            "removed_fg": None if kept_fg is None else 1 - kept_fg,
            "removed_bg": None if kept_bg is None else 1 - kept_bg,
            "neg_over_pos": _ratio(neg_fg + neg_bg, pos),
        }
    return report
