"""The interface between a classification loss and the box predictor.

A loss declares how many logits it needs per RoI (C, C+1 or C+2) and how they turn into test
scores, so the predictor never guesses the layout (the C vs C+1 vs C+2 confusion is the most
reported integration bug of the long-tail forks). Scores are always (R, C+1), background last,
as detectron2's ``fast_rcnn_inference`` expects.
"""

from contextlib import contextmanager
from typing import Dict, Optional  # noqa: F401  (annotations)

import torch
from detectron2.config import configurable
from torch import nn

__all__ = ["ClassificationLoss", "check_logits", "append_background", "one_hot_targets"]


def check_logits(logits: torch.Tensor, gt_classes: torch.Tensor, width: int, name: str):
    """Readable errors for the wrong logit width or mismatched label count."""
    if logits.dim() != 2 or logits.shape[1] != width:
        raise ValueError(
            f"{name}: expected logits of shape (R, {width}), got {tuple(logits.shape)}"
        )
    if gt_classes.shape != logits.shape[:1]:
        raise ValueError(
            f"{name}: gt_classes has shape {tuple(gt_classes.shape)}, logits {tuple(logits.shape)}"
        )


def append_background(probs: torch.Tensor) -> torch.Tensor:
    """(R, C) class probabilities -> (R, C + 1) with a zero background column."""
    return torch.cat([probs, probs.new_zeros(probs.shape[0], 1)], dim=1)


def one_hot_targets(gt_classes: torch.Tensor, num_columns: int, dtype=torch.float32):
    """(R,) labels in [0, C] -> (R, num_columns) float one-hot. With num_columns = C a
    background row (label C) is all zero; with C + 1 its last column is one."""
    target = torch.zeros(gt_classes.shape[0], num_columns, dtype=dtype, device=gt_classes.device)
    rows = (gt_classes < num_columns).nonzero()[:, 0]
    target[rows, gt_classes[rows]] = 1
    return target


class ClassificationLoss(nn.Module):
    """
    Base of the losses in LONGTAIL_LOSS_REGISTRY. Subclasses set ``extra_logits`` (logits per
    RoI beyond the C classes: 0, 1 or 2) and ``uses_prior_prob`` (initialise the classifier bias
    to -log((1 - pi) / pi), as the sigmoid losses do), and implement ``losses`` and ``scores``.
    Statistics they keep are buffers: they follow the device and are checkpointed.

    Running statistics (the one contract for every stateful loss): a loss whose buffers
    accumulate over the training stream (Seesaw's counts, EQL v2's gradients) sets
    ``has_running_statistics = True`` and moves them inside ``losses`` only when
    :attr:`updates_statistics` is True. Callers that evaluate the loss more than once per step
    (PCB's earlier passes) wrap the extra calls in :meth:`frozen_statistics`.
    """

    extra_logits: int = 1
    uses_prior_prob: bool = False
    # False when ``scores`` appends a zero background column (sigmoid losses without a
    # background logit); the predictor then logs accuracy with "no class above 1/2" as background.
    has_background_score: bool = True
    # True when buffers accumulate statistics of the training stream (see the class docstring).
    has_running_statistics: bool = False

    @configurable
    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self._frozen_depth = 0

    @classmethod
    def from_config(cls, cfg, stats):
        """Keyword arguments from the config and the training set's ClassStatistics ``stats``."""
        return {"num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES}

    @property
    def updates_statistics(self) -> bool:
        """Whether a call now may move the running statistics: in training mode and outside
        :meth:`frozen_statistics`."""
        return self.training and self._frozen_depth == 0

    @contextmanager
    def frozen_statistics(self):
        """Within this block the loss is computed as usual (same value, same gradient) but its
        running statistics do not move. Nests; the training mode is left untouched."""
        self._frozen_depth += 1
        try:
            yield
        finally:
            self._frozen_depth -= 1

    @property
    def class_frequency(self) -> Optional[torch.Tensor]:
        """(C,) image frequency f(c) of the training set that the loss is built on (the label
        prior of Balanced Sigmoid, used by BALMS's meta step); None for losses without one."""
        return None

    @property
    def num_logits(self) -> int:
        return self.num_classes + self.extra_logits

    def forward(self, logits: torch.Tensor, gt_classes: torch.Tensor, **kwargs):
        """
        Args:
            logits: (R, num_logits) classifier outputs (the predictor passes fp32).
            gt_classes: (R,) int64 in [0, C], C = background.
            kwargs: loss-specific options (PCB's soft targets for the losses that take them).
        Returns:
            Dict[str, Tensor]: scalar losses, usually {"loss_cls": ...}.
        """
        check_logits(logits, gt_classes, self.num_logits, type(self).__name__)
        return self.losses(logits, gt_classes, **kwargs)

    def losses(self, logits: torch.Tensor, gt_classes: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``forward`` after the shape check; implemented by each loss."""
        raise NotImplementedError

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """(R, num_logits) logits -> (R, C + 1) test scores, background last."""
        raise NotImplementedError
