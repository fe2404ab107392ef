"""Seesaw Loss (Wang et al., "Seesaw Loss for Long-Tailed Instance Segmentation", CVPR 2021;
reference implementation mmdetection's seesaw_loss.py).

C + 2 logits: C class logits trained with a softmax CE on positive RoIs whose negative logits
are scaled by S_ij = M_ij C_ij (mitigation by the cumulative counts N, compensation by the
predicted scores), plus a 2-way objectness softmax on every RoI. Both terms are divided by the
number of sampled RoIs. mmdetection keeps N per GPU; the module here sums its increments over
all ranks, so results do not depend on the number of GPUs.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable

from ..distributed import all_reduce_sum
from .base import ClassificationLoss, check_logits
from .registry import LONGTAIL_LOSS_REGISTRY

__all__ = ["seesaw_loss", "SeesawLoss"]


def seesaw_loss(
    logits: torch.Tensor,
    gt_classes: torch.Tensor,
    cum_samples: torch.Tensor,
    p: float = 0.8,
    q: float = 2.0,
    eps: float = 1e-2,
    soft_targets: Optional[torch.Tensor] = None,
    alpha: float = 0.0,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Args:
        logits: (R, C + 2): C class logits, then the objectness logits (foreground, background).
        gt_classes: (R,) int64 in [0, C], C = background.
        cum_samples: (C,) RoIs sampled so far per class, this batch included.
        soft_targets, alpha: PCB (see longtail_d2.modeling.pcb): (P, C) target distributions of
            the P positive RoIs; the class term becomes (1 - alpha) CE + alpha soft CE, both on
            the seesaw-adjusted logits.
    Returns:
        loss_classes: (1/R) sum over positive RoIs r of CE(z~_r, y_r), with
            z~_j = z_j + log(M_yj C_yj) for j != y, M_ij = (N_j / N_i)^p if N_j < N_i else 1,
            C_ij = (s_j / max(s_i, eps))^q if s_j > s_i else 1, s = softmax(z) (detached).
        loss_objectness: (1/R) sum_r CE(o_r, 0 if foreground else 1).
    """
    num_classes = cum_samples.numel()
    check_logits(logits, gt_classes, num_classes + 2, "seesaw_loss")
    num_rois = max(logits.shape[0], 1)
    is_fg = gt_classes < num_classes
    loss_obj = F.cross_entropy(logits[:, num_classes:], (~is_fg).long(), reduction="sum") / num_rois

    z, labels = logits[is_fg, :num_classes], gt_classes[is_fg]
    counts = cum_samples.to(z.dtype).clamp(min=1)
    with torch.no_grad():
        # log S_ij = p log min(N_j / N_i, 1) + q log max(s_j / max(s_i, eps), 1). Both factors
        # are exactly 1 at j = i, so the true class's logit stays as is without a mask.
        log_s = (counts[None, :] / counts[labels][:, None]).clamp_(max=1).log_().mul_(p)
        s = torch.softmax(z, dim=1)
        rel = s.div_(s.gather(1, labels[:, None]).clamp(min=eps))
        log_s.add_(rel.clamp_(min=1).log_().mul_(q))
    adjusted = z + log_s
    loss_classes = F.cross_entropy(adjusted, labels, reduction="sum") / num_rois
    if soft_targets is not None and alpha > 0:
        soft = -(soft_targets * torch.log_softmax(adjusted, dim=1)).sum() / num_rois
        loss_classes = (1 - alpha) * loss_classes + alpha * soft
    return loss_classes, loss_obj


@LONGTAIL_LOSS_REGISTRY.register()
class SeesawLoss(ClassificationLoss):
    """
    Logits (R, C + 2); scores softmax_C(z)_j * softmax_2(o)_fg, background softmax_2(o)_bg.
    Buffer: cum_samples (C,), counted over all ranks before the loss, as in mmdetection.
    """

    extra_logits = 2
    has_running_statistics = True

    @configurable
    def __init__(self, num_classes: int, p: float = 0.8, q: float = 2.0, eps: float = 1e-2):
        super().__init__(num_classes)
        self.p, self.q, self.eps = p, q, eps
        self.register_buffer("cum_samples", torch.zeros(num_classes))

    @classmethod
    def from_config(cls, cfg, stats):
        c = cfg.MODEL.ROI_BOX_HEAD.SEESAW
        return {"num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES, "p": c.P, "q": c.Q, "eps": c.EPS}

    def losses(self, logits, gt_classes, soft_targets=None, alpha=0.0):
        if self.updates_statistics:
            counts = torch.bincount(gt_classes, minlength=self.num_classes + 1)[: self.num_classes]
            self.cum_samples += all_reduce_sum(counts.to(self.cum_samples.dtype))
        loss_classes, loss_obj = seesaw_loss(
            logits, gt_classes, self.cum_samples, self.p, self.q, self.eps, soft_targets, alpha
        )
        return {"loss_cls_classes": loss_classes, "loss_cls_objectness": loss_obj}

    def scores(self, logits):
        probs = torch.softmax(logits[:, : self.num_classes], dim=1)
        objectness = torch.softmax(logits[:, self.num_classes :], dim=1)
        return torch.cat([probs * objectness[:, :1], objectness[:, 1:]], dim=1)
