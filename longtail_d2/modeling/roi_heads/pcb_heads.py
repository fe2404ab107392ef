"""PCB's iterative box head and predictor (He et al., CVPR 2022; see longtail_d2.modeling.pcb).

The shared box head runs T times on the pooled RoI features; between passes the features are
modulated by the previous pass: f_{t+1} = f_t * MLP_loc(deltas_t) (a 7 x 7 map) + MLP_cls(logits_t)
(a channel bias). The classification loss of pass t is weighted lambda_t and uses PCB's soft
targets with alpha_t; box regression is trained on pass REG_PASS; inference uses the last pass.
"""

from contextlib import nullcontext

from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY
from detectron2.utils.events import get_event_storage
from torch import nn

from ..pcb import PCB_VARIANTS, PairwiseConfusion, pcb_alphas, pcb_variant
from .predictor import LongTailOutputLayers
from .roi_heads import LongTailROIHeads

__all__ = ["PCBOutputLayers", "PCBROIHeads"]


class PCBOutputLayers(LongTailOutputLayers):
    @configurable
    def __init__(
        self,
        input_shape,
        *,
        momentum=0.99,
        alpha=0.4,
        start_iter=0,
        update_per_pass=False,
        **kwargs,
    ):
        """
        Args:
            momentum: EMA momentum m of the confusion matrix.
            alpha: weight of the soft targets at the last pass.
            start_iter: PCB acts from this iteration on, once every class has been seen.
            update_per_pass: update the matrix with each pass's predictions before that pass's
                loss (the reference: T updates per step); else once per step, with the last
                pass's, before all losses.
            kwargs: LongTailOutputLayers arguments.
        """
        super().__init__(input_shape, **kwargs)
        self.variant = pcb_variant(type(self.cls_loss))
        if self.variant is None:
            raise ValueError(
                f"PCB is defined on {sorted(k.__name__ for k in PCB_VARIANTS)} and their "
                f"subclasses, not on {type(self.cls_loss).__name__} (MODEL.ROI_BOX_HEAD.CLS_LOSS)"
            )
        self.alpha, self.start_iter, self.update_per_pass = alpha, start_iter, update_per_pass
        self.confusion = PairwiseConfusion(self.num_classes, momentum, self.variant.normalize_rows)

    @classmethod
    def from_config(cls, cfg, input_shape, class_stats=None):
        ret = super().from_config(cfg, input_shape, class_stats)
        pcb = cfg.MODEL.ROI_BOX_HEAD.PCB
        ret.update(
            momentum=pcb.MOMENTUM,
            alpha=pcb.ALPHA,
            start_iter=pcb.START_ITER if pcb.START_ITER >= 0 else cfg.SOLVER.STEPS[0],
            update_per_pass=pcb.UPDATE_PER_PASS,
        )
        return ret

    def iterative_losses(self, predictions, proposals, loss_weights, reg_pass):
        """
        Args:
            predictions: per pass, (scores (R, num_logits), deltas) of the predictor.
            proposals: the sampled proposals with ``gt_classes`` and ``gt_boxes``.
            loss_weights: lambda_t per pass; reg_pass: the pass whose box regression is trained.
        """
        gt_classes = cat([p.gt_classes for p in proposals], dim=0)
        fg = gt_classes < self.num_classes
        last = predictions[-1][0].float()

        def update(scores):
            probs = self.variant.probabilities(scores.float()[fg].detach(), self.num_classes)
            self.confusion.update(probs, gt_classes[fg])

        storage = get_event_storage()
        if not self.update_per_pass:
            update(last)
        losses = {}
        for t, ((scores, _), weight) in enumerate(zip(predictions, loss_weights)):
            if self.update_per_pass:
                update(scores)
            if t == 0:  # the gate is decided once per step, after the step's first update
                active = storage.iter >= self.start_iter and self.confusion.all_seen()
                storage.put_scalar("pcb_active", float(active))
                alphas = pcb_alphas(self.alpha, len(predictions), active)
            alpha = alphas[t]
            kwargs = self.variant.loss_kwargs(self.confusion, gt_classes[fg], alpha)
            # Loss statistics (Seesaw's counts, EQL v2's gradients) move once per step, at the
            # last pass (the reference updates them at every pass, tripling them).
            last_pass = t == len(predictions) - 1
            with nullcontext() if last_pass else self.cls_loss.frozen_statistics():
                for name, value in self.cls_loss(scores.float(), gt_classes, **kwargs).items():
                    losses[f"{name}_pass{t}"] = weight * value
        self.log_classification_stats(last, gt_classes)
        losses["loss_box_reg"] = self.loss_weight.get("loss_box_reg", 1.0) * self.box_loss(
            predictions[reg_pass][1], proposals, gt_classes
        )
        return losses


def _mlp(in_features, hidden, out_features, layer_norm=False):
    """Linear-ReLU-Linear; with ``layer_norm``, a LayerNorm(in_features) on its input first (the
    reference's ``use_layer_norm``, on in its EQL v2 + PCB configs)."""
    layers = [nn.LayerNorm(in_features)] if layer_norm else []
    return nn.Sequential(
        *layers,
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, out_features),
    )


@ROI_HEADS_REGISTRY.register()
class PCBROIHeads(LongTailROIHeads):
    predictor_class = PCBOutputLayers

    @configurable
    def __init__(
        self,
        *,
        num_passes,
        pass_loss_weights,
        reg_pass,
        mlp_hidden,
        pooled_shape,
        use_layer_norm=False,
        **kwargs,
    ):
        """
        Args:
            num_passes: T passes of the shared box head.
            pass_loss_weights: lambda_t of each pass's classification loss.
            reg_pass: the pass whose box regression is trained.
            mlp_hidden: hidden width of the two modulation MLPs.
            pooled_shape: (channels, resolution) of the pooled RoI features.
            use_layer_norm: LayerNorm over the classification logits (R, num_logits) at the
                input of the channel MLP (not of the spatial one).
        """
        super().__init__(**kwargs)
        if len(pass_loss_weights) != num_passes or not 0 <= reg_pass < num_passes:
            raise ValueError(
                "MODEL.ROI_BOX_HEAD.PCB: PASS_LOSS_WEIGHTS needs NUM_PASSES entries "
                "and REG_PASS must be in [0, NUM_PASSES)"
            )
        self.num_passes, self.pass_loss_weights, self.reg_pass = (
            num_passes,
            pass_loss_weights,
            reg_pass,
        )
        self.pooled_shape = pooled_shape
        channels, resolution = pooled_shape
        predictor = self.box_predictor
        self.channel_mlp = _mlp(
            predictor.cls_score.out_features, mlp_hidden, channels, use_layer_norm
        )
        self.spatial_mlp = _mlp(predictor.bbox_pred.out_features, mlp_hidden, resolution**2)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        pcb = cfg.MODEL.ROI_BOX_HEAD.PCB
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        ret.update(
            num_passes=pcb.NUM_PASSES,
            pass_loss_weights=tuple(pcb.PASS_LOSS_WEIGHTS),
            reg_pass=pcb.REG_PASS,
            mlp_hidden=pcb.MLP_HIDDEN,
            use_layer_norm=pcb.USE_LAYER_NORM,
            pooled_shape=(
                input_shape[in_features[0]].channels,
                cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION,
            ),
        )
        return ret

    def _forward_box(self, features, proposals):
        channels, resolution = self.pooled_shape
        x = self.box_pooler(
            [features[f] for f in self.box_in_features], [p.proposal_boxes for p in proposals]
        )
        predictions = []
        for t in range(self.num_passes):
            if t > 0:
                scores, deltas = predictions[-1]
                x = x * self.spatial_mlp(deltas).view(
                    -1, 1, resolution, resolution
                ) + self.channel_mlp(scores).view(-1, channels, 1, 1)
            predictions.append(self.box_predictor(self.box_head(x)))
        if self.training:
            if self.train_on_pred_boxes:
                raise NotImplementedError("PCBROIHeads with MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES")
            return self.box_predictor.iterative_losses(
                predictions, proposals, self.pass_loss_weights, self.reg_pass
            )
        instances, _ = self.box_predictor.inference(predictions[-1], proposals)
        return instances
