"""Softmax cross-entropy over C classes + background: detectron2's default, the baseline."""

import torch
import torch.nn.functional as F
from detectron2.config import configurable

from .base import ClassificationLoss
from .registry import LONGTAIL_LOSS_REGISTRY

__all__ = ["SoftmaxCELoss"]


@LONGTAIL_LOSS_REGISTRY.register()
class SoftmaxCELoss(ClassificationLoss):
    """Mean over RoIs of CE(softmax(z), y); logits (R, C+1); scores = softmax."""

    extra_logits = 1

    @configurable
    def __init__(self, num_classes: int):
        super().__init__(num_classes)

    @classmethod
    def from_config(cls, cfg):
        return {"num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES}

    def losses(self, logits, gt_classes):
        if logits.numel() == 0:
            return {"loss_cls": logits.sum() * 0.0}
        return {"loss_cls": F.cross_entropy(logits, gt_classes)}

    def scores(self, logits):
        return torch.softmax(logits, dim=-1)
