"""How a training stage changed the classification layer, per frequency group of the classes.

A class's score on a box is sigma(w . x + b) in a sigmoid head. With the features x fixed (a
decoupled stage 2 trains the classifier alone), scaling w by a > 0 keeps the order of that
class's detections, which is all its AP reads, apart from the per-image detection cap; turning w
(cosine < 1) reorders them (in a softmax head the other classes' logits also enter each score).
So the norm ratio |w_after| / |w_before| says how much a stage rescales a class's scores and the
cosine how much it can reorder them.
Pure functions on tensors; ``benchmarks/classifier_change.py`` runs them on two checkpoints.
"""

from typing import Dict, Sequence

import torch

from .loss_gradients import GROUPS, group_index

__all__ = ["CLASSIFIER_KEYS", "classifier_change", "classifier_change_by_group"]

# Checkpoint keys of the classification layer of LongTailROIHeads / StandardROIHeads.
CLASSIFIER_KEYS = (
    "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.cls_score.bias",
)


def classifier_change(
    w_before: torch.Tensor, b_before: torch.Tensor, w_after: torch.Tensor, b_after: torch.Tensor
) -> Dict[str, torch.Tensor]:
    """
    Args:
        w_before, w_after: (C, D) one row per class (a background row must be dropped first).
        b_before, b_after: (C,)
    Returns:
        {"norm_before": (C,) |w_before|, "norm_after": (C,) |w_after|, "norm_ratio": (C,)
         |w_after| / |w_before|, "cosine": (C,) cos(w_before, w_after), "bias_before": (C,),
         "bias_after": (C,)}, float64.
    """
    w0, w1 = w_before.double(), w_after.double()
    n0, n1 = w0.norm(dim=1), w1.norm(dim=1)
    return {
        "norm_before": n0,
        "norm_after": n1,
        "norm_ratio": n1 / n0,
        "cosine": (w0 * w1).sum(dim=1) / (n0 * n1),
        "bias_before": b_before.double(),
        "bias_after": b_after.double(),
    }


def classifier_change_by_group(
    change: Dict[str, torch.Tensor], frequency: Sequence[str]
) -> Dict[str, Dict[str, float]]:
    """{group: {"classes": k, each entry of ``change``: its mean over the group's k classes}}
    for the groups ("r", "c", "f") that have classes; ``frequency``: (C,) group of each class."""
    groups = group_index(frequency)
    report = {}
    for g, name in enumerate(GROUPS):
        members = groups == g
        if members.any():
            report[name] = {"classes": int(members.sum())}
            report[name].update({k: float(v[members].mean()) for k, v in change.items()})
    return report
