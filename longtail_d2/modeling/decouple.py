"""Decoupled training (Kang et al., "Decoupling Representation and Classifier for Long-Tailed
Recognition", ICLR 2020; BALMS stage 2): freeze a trained detector except a few parameters."""

import logging

from detectron2.layers import FrozenBatchNorm2d
from torch import nn

__all__ = ["freeze_for_decoupled_training"]

logger = logging.getLogger(__name__)


def _freeze_batchnorm(module: nn.Module):
    """Frozen BatchNorm layers use their running statistics in training too (test behaviour)."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            if not any(p.requires_grad for p in child.parameters()):
                setattr(module, name, FrozenBatchNorm2d.convert_frozen_batchnorm(child))
        else:
            _freeze_batchnorm(child)


def freeze_for_decoupled_training(model: nn.Module, trainable):
    """
    Sets ``requires_grad`` to True only for parameters whose name contains one of ``trainable``
    and turns frozen BatchNorm layers into FrozenBatchNorm2d. Returns the trainable names.
    Frozen parameters get no gradient, so the optimizer and DDP skip them.
    """
    names = []
    for name, param in model.named_parameters():
        param.requires_grad = any(pattern in name for pattern in trainable)
        if param.requires_grad:
            names.append(name)
    if not names:
        raise ValueError(f"MODEL.DECOUPLE.TRAINABLE {list(trainable)} matches no parameter name")
    _freeze_batchnorm(model)
    logger.info(f"Decoupled training: {len(names)} trainable parameters: {names}")
    return names
