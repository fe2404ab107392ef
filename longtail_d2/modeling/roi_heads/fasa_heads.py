"""FASA's box predictor and ROI heads (Zang et al., ICCV 2021; see longtail_d2.modeling.fasa).

``FASAROIHeads`` passes the box-head features (the classifier input) to the predictor, which
updates the class-wise statistics from the positive RoIs and adds the loss of the virtual
features, computed by the classification layer alone. The sampling probabilities are adapted by
``longtail_d2.engine.fasa_adaptation.FASAAdaptationHook``.
"""

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY
from detectron2.utils.events import get_event_storage

from ..fasa import FeatureStatistics, draw_virtual_features, initial_probabilities
from ..losses.registry import training_statistics
from .predictor import LongTailOutputLayers
from .roi_heads import LongTailROIHeads

__all__ = ["FASAOutputLayers", "FASAROIHeads"]


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
        **kwargs,
    ):
        """
        Args:
            instance_count: (C,) training instances per class (initial sampling probabilities).
            momentum: weight of the batch in the EMA of the feature statistics.
            aug_loss_weight: weight of the virtual features' loss.
            prob_power, prob_scale: p_c = scale * ((1 / n_c) / sum_k 1 / n_k)^power, clamped.
            start_iter: virtual features from this iteration on (statistics are kept before).
            kwargs: LongTailOutputLayers arguments.
        """
        super().__init__(input_shape, **kwargs)
        if type(self.cls_loss).__name__ != "SoftmaxCELoss":
            raise ValueError(
                "FASA adapts its sampling from per-RoI softmax cross-entropies: it needs "
                f"MODEL.ROI_BOX_HEAD.CLS_LOSS SoftmaxCELoss, not {type(self.cls_loss).__name__}"
            )
        self.aug_loss_weight, self.start_iter = aug_loss_weight, start_iter
        self.feature_stats = FeatureStatistics(
            self.num_classes, self.cls_score.in_features, momentum
        )
        probs = initial_probabilities(instance_count, prob_power, prob_scale)
        self.register_buffer("sample_probs", probs)
        # Per-class held-out loss at the last adaptation, and how many adaptations ran.
        self.register_buffer("previous_losses", torch.zeros(self.num_classes))
        self.register_buffer("adaptations", torch.zeros((), dtype=torch.int64))

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        fasa = cfg.MODEL.ROI_BOX_HEAD.FASA
        stats = training_statistics(cfg)
        counts = (
            torch.as_tensor(stats.instance_count)
            if stats is not None
            else torch.ones(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
        )
        ret.update(
            instance_count=counts,
            momentum=fasa.MOMENTUM,
            aug_loss_weight=fasa.AUG_LOSS_WEIGHT,
            prob_power=fasa.PROB_POWER,
            prob_scale=fasa.PROB_SCALE,
            # -1: after one epoch, when every class had a chance to get statistics.
            start_iter=(
                fasa.START_ITER
                if fasa.START_ITER >= 0
                else (stats.num_images // cfg.SOLVER.IMS_PER_BATCH if stats is not None else 0)
            ),
        )
        return ret

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


@ROI_HEADS_REGISTRY.register()
class FASAROIHeads(LongTailROIHeads):
    predictor_class = FASAOutputLayers

    def _forward_box(self, features, proposals):
        x = self.box_pooler(
            [features[f] for f in self.box_in_features], [p.proposal_boxes for p in proposals]
        )
        x = self.box_head(x).flatten(1)
        predictions = self.box_predictor(x)
        if self.training:
            if self.train_on_pred_boxes:
                raise NotImplementedError("FASAROIHeads with ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES")
            losses = self.box_predictor.losses(predictions, proposals)
            losses.update(self.box_predictor.fasa_losses(x, proposals))
            return losses
        instances, _ = self.box_predictor.inference(predictions, proposals)
        return instances
