"""Seesaw Loss (Wang et al., "Seesaw Loss for Long-Tailed Instance Segmentation", CVPR 2021;
reference implementation mmdetection's seesaw_loss.py).

C + 2 logits: C class logits trained with a softmax CE on positive RoIs whose negative logits
are scaled by S_ij = M_ij C_ij (mitigation by the cumulative counts N, compensation by the
predicted scores), plus a 2-way objectness softmax on every RoI. Both terms are divided by the
number of sampled RoIs. mmdetection keeps N per GPU; the module here sums its increments over
all ranks, so results do not depend on the number of GPUs.
"""

import math
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
    rows = is_fg.nonzero()[:, 0]
    labels = gt_classes[rows]
    counts = cum_samples.to(logits.dtype).clamp(min=1)
    with torch.no_grad():
        # log S_ij = p min(log N_j - log N_i, 0) + q max(log s_j - log max(s_i, eps), 0): logs
        # of (C,) counts and one log_softmax instead of ratios and logs over (P, C). Both terms
        # are exactly 0 at j = i, so the true class's logit stays as is without a mask.
        log_n = counts.log()
        log_s = (log_n[None, :] - log_n[labels][:, None]).clamp_(max=0).mul_(p)
        log_sm = torch.log_softmax(logits[rows, :num_classes], dim=1)
        floor = log_sm.gather(1, labels[:, None]).clamp_(min=math.log(eps))
        log_s.add_(log_sm.sub_(floor).clamp_(min=0).mul_(q))
    if soft_targets is not None and alpha > 0:
        loss_obj = F.cross_entropy(logits[:, num_classes:], (~is_fg).long(), reduction="sum")
        adjusted = logits[rows, :num_classes] + log_s
        loss_classes = F.cross_entropy(adjusted, labels, reduction="sum") / num_rois
        soft = -(soft_targets * torch.log_softmax(adjusted, dim=1)).sum() / num_rois
        return (1 - alpha) * loss_classes + alpha * soft, loss_obj / num_rois
    return _SeesawCE.apply(logits, rows, labels, log_s)


class _SeesawCE(torch.autograd.Function):
    """
    Both Seesaw terms in one function of the (R, C + 2) logits: (1/R) sum over the P positive
    RoIs of CE(z_r + log S_r, y_r), and (1/R) sum_r of the objectness CE. Autograd would
    scatter each term's gradient into its own (R, C + 2) zeros and add them; here backward
    writes one: softmax(z + log S) - Y on the positive rows, softmax(o) - Y on the objectness
    columns. ``log_s`` (P, C) is a constant (the compensation uses detached scores).
    """

    @staticmethod
    def forward(ctx, logits, rows, labels, log_s):
        num_rois = max(logits.shape[0], 1)
        num_classes = logits.shape[1] - 2
        log_probs = torch.log_softmax(log_s.add(logits[rows, :num_classes]), dim=1)
        obj_targets = torch.ones(logits.shape[0], dtype=torch.long, device=logits.device)
        obj_targets[rows] = 0
        obj_log_probs = torch.log_softmax(logits[:, num_classes:], dim=1)
        loss_cls = -log_probs.gather(1, labels[:, None]).sum() / num_rois
        loss_obj = -obj_log_probs.gather(1, obj_targets[:, None]).sum() / num_rois
        ctx.save_for_backward(rows, labels, log_probs, obj_targets, obj_log_probs)
        ctx.shape = logits.shape
        return loss_cls, loss_obj

    @staticmethod
    def backward(ctx, grad_cls, grad_obj):
        rows, labels, log_probs, obj_targets, obj_log_probs = ctx.saved_tensors
        num_rois = max(ctx.shape[0], 1)
        num_classes = ctx.shape[1] - 2
        grad = log_probs.new_zeros(ctx.shape)
        probs = log_probs.exp()
        probs[torch.arange(len(rows), device=probs.device), labels] -= 1
        grad[:, :num_classes].index_copy_(0, rows, probs.mul_(grad_cls / num_rois))
        obj = obj_log_probs.exp()
        obj[torch.arange(ctx.shape[0], device=obj.device), obj_targets] -= 1
        grad[:, num_classes:] = obj.mul_(grad_obj / num_rois)
        return grad, None, None, None


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
