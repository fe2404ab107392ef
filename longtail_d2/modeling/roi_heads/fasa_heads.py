"""FASA's box predictor and ROI heads (Zang et al., ICCV 2021; see longtail_d2.modeling.fasa).

The box path is detectron2's ``StandardROIHeads._forward_box``: the predictor's ``forward``
returns its predictions together with the box-head features (the classifier input), and its
``losses`` updates the class-wise statistics from the positive RoIs and adds the loss of the
virtual features, computed by the classification layer alone. The predictor owns its sampling
state; ``longtail_d2.engine.fasa_adaptation.FASAAdaptationHook`` computes held-out losses and
calls :meth:`FASAOutputLayers.adapt`.
"""

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY
from detectron2.utils.events import get_event_storage

from ...data import training_class_statistics
from ..fasa import (
    FeatureStatistics,
    adapt_probabilities,
    class_groups,
    draw_virtual_features,
    initial_probabilities,
)
from ..losses import SoftmaxCELoss
from .predictor import LongTailOutputLayers
from .roi_heads import LongTailROIHeads

__all__ = ["FASAOutputLayers", "FASAROIHeads"]


class _Predictions(tuple):
    """(scores, deltas), as detectron2 unpacks them, plus ``features`` (R, D): the classifier
    input, which reaches ``losses`` through detectron2's unchanged ``_forward_box``."""

    features: torch.Tensor


class FASAOutputLayers(LongTailOutputLayers):
    @configurable
    def __init__(
        self,
        input_shape,
        *,
        instance_count,
        momentum=0.1,
        aug_loss_weight=0.1,
        prob_power=1.0,
        prob_scale=1.0,
        start_iter=0,
        adapt_up=1.1,
        adapt_down=0.9,
        **kwargs,
    ):
        """
        Args:
            instance_count: (C,) training instances per class (initial sampling probabilities).
            momentum: weight of the batch in the EMA of the feature statistics.
            aug_loss_weight: weight of the virtual features' loss.
            prob_power, prob_scale: p_c = scale * ((1 / n_c) / sum_k 1 / n_k)^power, clamped.
            start_iter: virtual features from this iteration on (statistics are kept before).
            adapt_up, adapt_down: factors of a class group's probabilities in :meth:`adapt`.
            kwargs: LongTailOutputLayers arguments.
        """
        super().__init__(input_shape, **kwargs)
        if not isinstance(self.cls_loss, SoftmaxCELoss):
            raise ValueError(
                "FASA adapts its sampling from per-RoI softmax cross-entropies: it needs "
                f"MODEL.ROI_BOX_HEAD.CLS_LOSS SoftmaxCELoss, not {type(self.cls_loss).__name__}"
            )
        self.aug_loss_weight, self.start_iter = aug_loss_weight, start_iter
        self.adapt_up, self.adapt_down = adapt_up, adapt_down
        self.feature_stats = FeatureStatistics(
            self.num_classes, self.cls_score.in_features, momentum
        )
        probs = initial_probabilities(instance_count, prob_power, prob_scale)
        self.register_buffer("sample_probs", probs)
        # Per-class held-out loss at the last adaptation, and how many adaptations ran.
        self.register_buffer("previous_losses", torch.zeros(self.num_classes))
        self.register_buffer("adaptations", torch.zeros((), dtype=torch.int64))

    @classmethod
    def from_config(cls, cfg, input_shape, class_stats=None):
        stats = class_stats if class_stats is not None else training_class_statistics(cfg)
        ret = super().from_config(cfg, input_shape, stats)
        fasa = cfg.MODEL.ROI_BOX_HEAD.FASA
        ret.update(
            instance_count=torch.as_tensor(stats.instance_count),
            momentum=fasa.MOMENTUM,
            aug_loss_weight=fasa.AUG_LOSS_WEIGHT,
            prob_power=fasa.PROB_POWER,
            prob_scale=fasa.PROB_SCALE,
            # -1: after one epoch, when every class had a chance to get statistics.
            start_iter=(
                fasa.START_ITER
                if fasa.START_ITER >= 0
                else stats.num_images // cfg.SOLVER.IMS_PER_BATCH
            ),
            adapt_up=fasa.ADAPT_UP,
            adapt_down=fasa.ADAPT_DOWN,
        )
        return ret

    def forward(self, x):
        """detectron2's (scores, deltas), carrying the flattened features ``x`` (R, D)."""
        x = x.flatten(1)
        predictions = _Predictions(super().forward(x))
        predictions.features = x
        return predictions

    def losses(self, predictions, proposals):
        losses = super().losses(predictions, proposals)
        losses.update(self.fasa_losses(predictions.features, proposals))
        return losses

    def fasa_losses(self, features, proposals):
        """Updates the statistics from the positive RoIs of ``features`` (R, D) and returns the
        loss of this step's virtual features, which reaches the classification layer only."""
        gt_classes = cat([p.gt_classes for p in proposals], dim=0)
        fg = gt_classes < self.num_classes
        self.feature_stats.update(features[fg].detach(), gt_classes[fg])
        zero = self.cls_score.weight.sum() * 0.0
        if get_event_storage().iter < self.start_iter:
            return {"loss_cls_virtual": zero}
        virtual, labels = draw_virtual_features(self.feature_stats, self.sample_probs)
        get_event_storage().put_scalar("fasa_virtual_features", len(labels))
        if len(labels) == 0:
            return {"loss_cls_virtual": zero}
        logits = self.cls_score(virtual).float()
        return {"loss_cls_virtual": self.aug_loss_weight * F.cross_entropy(logits, labels)}

    @torch.no_grad()
    def adapt(self, losses: torch.Tensor) -> torch.Tensor:
        """
        FASA's sampling adaptation from this round's per-class held-out losses (C,): the
        first round only records them; later rounds group the classes by their feature means
        and scale each group's probabilities by ``adapt_down`` (its summed loss rose) or
        ``adapt_up`` (it fell). Returns the new (C,) probabilities.
        """
        if self.adaptations > 0:
            groups = class_groups(self.feature_stats.mean)
            self.sample_probs.copy_(
                adapt_probabilities(
                    self.sample_probs,
                    groups,
                    losses,
                    self.previous_losses,
                    self.adapt_up,
                    self.adapt_down,
                )
            )
        self.previous_losses.copy_(losses)
        self.adaptations += 1
        return self.sample_probs


@ROI_HEADS_REGISTRY.register()
class FASAROIHeads(LongTailROIHeads):
    """detectron2's standard ROI heads with FASA's predictor (and FASATrainer's adaptation)."""

    predictor_class = FASAOutputLayers
