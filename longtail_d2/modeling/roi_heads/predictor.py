"""The box predictor of longtail_d2: detectron2's FastRCNNOutputLayers whose classification
loss, logit width and test-time activation come from LONGTAIL_LOSS_REGISTRY. Its ``from_config``
is where the training set's class statistics enter the model: computed by
``longtail_d2.data.training_class_statistics`` (or handed in by the ROI heads) and passed to the
loss and to the PCB / FASA predictors."""

import math

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers, _log_classification_stats
from torch import nn

from ...data import training_class_statistics
from ..losses import ClassificationLoss, build_classification_loss
from .normed_layers import NormedLinear

__all__ = ["LongTailOutputLayers"]


class LongTailOutputLayers(FastRCNNOutputLayers):
    """
    ``cls_score`` has ``cls_loss.num_logits`` outputs (C, C+1 or C+2; a cosine classifier when
    ``normed_temperature`` > 0); losses are computed in fp32 (AMP-safe); ``predict_probs``
    returns the loss's (R_i, C + 1) scores, background last. Box regression is detectron2's.
    """

    @configurable
    def __init__(
        self,
        input_shape,
        *,
        cls_loss: ClassificationLoss,
        prior_prob: float = 0.001,
        normed_temperature: float = 0.0,
        **kwargs,
    ):
        """
        Args:
            cls_loss: the classification loss module (keeps its own statistics).
            prior_prob: pi of the bias init -log((1 - pi) / pi) of losses that ask for it.
            normed_temperature: tau of a cosine classifier; 0 = a plain linear layer.
            kwargs: FastRCNNOutputLayers arguments.
        """
        super().__init__(input_shape, **kwargs)
        if cls_loss.num_classes != self.num_classes:
            raise ValueError(
                f"{type(cls_loss).__name__} is built for {cls_loss.num_classes} classes, the "
                f"predictor for {self.num_classes} (MODEL.ROI_HEADS.NUM_CLASSES)"
            )
        self.cls_loss = cls_loss
        in_features = self.cls_score.in_features
        if normed_temperature > 0:
            self.cls_score = NormedLinear(in_features, cls_loss.num_logits, normed_temperature)
        else:
            self.cls_score = nn.Linear(in_features, cls_loss.num_logits)
            nn.init.normal_(self.cls_score.weight, std=0.01)
            nn.init.constant_(self.cls_score.bias, 0)
        if cls_loss.uses_prior_prob:
            # Sigmoid losses start every class at probability pi, not 0.5 (focal-loss prior).
            nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    @classmethod
    def from_config(cls, cfg, input_shape, class_stats=None):
        """``class_stats``: the ClassStatistics of DATASETS.TRAIN when the caller has them (the
        cascade heads compute them once for their three predictors); computed here otherwise."""
        head = cfg.MODEL.ROI_BOX_HEAD
        if head.USE_FED_LOSS or head.USE_SIGMOID_CE:
            raise ValueError(
                "MODEL.ROI_BOX_HEAD.USE_FED_LOSS / USE_SIGMOID_CE are detectron2's switches of "
                "its own predictor; with longtail_d2's heads set MODEL.ROI_BOX_HEAD.CLS_LOSS "
                "(FederatedLoss, SigmoidCELoss, ...) instead"
            )
        ret = super().from_config(cfg, input_shape)
        stats = class_stats if class_stats is not None else training_class_statistics(cfg)
        ret.update(
            cls_loss=build_classification_loss(cfg, stats),
            prior_prob=head.PRIOR_PROB,
            normed_temperature=(
                head.NORMED_CLASSIFIER.TEMPERATURE if head.NORMED_CLASSIFIER.ENABLED else 0.0
            ),
        )
        return ret

    @property
    def classifier(self) -> nn.Module:
        """The classification layer: (R, D) box-head features -> (R, num_logits) logits (what
        decoupled training and BALMS's meta step train)."""
        return self.cls_score

    @property
    def class_frequency(self) -> torch.Tensor:
        """(C,) training image frequency f(c) the loss is built on (BALMS's label prior)."""
        freq = self.cls_loss.class_frequency
        if freq is None:
            raise ValueError(
                f"{type(self.cls_loss).__name__} keeps no class frequency; MODEL.ROI_BOX_HEAD."
                "CLS_LOSS must be a loss with a label prior (BalancedSigmoidLoss)"
            )
        return freq

    def losses(self, predictions, proposals):
        scores, proposal_deltas = predictions
        gt_classes = (
            cat([p.gt_classes for p in proposals], dim=0)
            if len(proposals)
            else torch.empty(0, dtype=torch.int64, device=scores.device)
        )
        logits = scores.float()
        self.log_classification_stats(logits, gt_classes)
        losses = dict(self.cls_loss(logits, gt_classes))
        losses["loss_box_reg"] = self.box_loss(proposal_deltas, proposals, gt_classes)
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}

    @torch.no_grad()
    def log_classification_stats(self, logits, gt_classes):
        """detectron2's accuracy scalars, from the loss's (R, C + 1) scores."""
        probs = self.cls_loss.scores(logits)
        if not self.cls_loss.has_background_score and len(probs):
            probs[:, -1] = 1 - probs[:, :-1].max(dim=1).values
        _log_classification_stats(probs, gt_classes)

    def box_loss(self, proposal_deltas, proposals, gt_classes):
        """detectron2's box regression loss of the proposals' deltas (fp32)."""
        if len(proposals):
            proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
            gt_boxes = cat(
                [(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals],
                dim=0,
            )
        else:
            proposal_boxes = gt_boxes = torch.empty((0, 4), device=proposal_deltas.device)
        return self.box_reg_loss(proposal_boxes, gt_boxes, proposal_deltas.float(), gt_classes)

    def predict_probs(self, predictions, proposals):
        scores, _ = predictions
        probs = self.cls_loss.scores(scores.float())
        return probs.split([len(p) for p in proposals], dim=0)
