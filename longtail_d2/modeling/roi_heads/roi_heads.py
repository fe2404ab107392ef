"""ROI heads that install LongTailOutputLayers: detectron2's standard and cascade heads with
only ``_init_box_head`` overridden, so every other detectron2 feature is unchanged."""

from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, CascadeROIHeads, StandardROIHeads

from ...data import training_class_statistics
from .predictor import LongTailOutputLayers

__all__ = ["LongTailROIHeads", "LongTailCascadeROIHeads"]


@ROI_HEADS_REGISTRY.register()
class LongTailROIHeads(StandardROIHeads):
    # The predictor this head installs; PCB's and FASA's heads name their own.
    predictor_class = LongTailOutputLayers

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictor"] = cls.predictor_class(cfg, ret["box_head"].output_shape)
        return ret


@ROI_HEADS_REGISTRY.register()
class LongTailCascadeROIHeads(CascadeROIHeads):
    """Each stage gets its own loss module (and statistics), as in mmdetection's cascade."""

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        stats = training_class_statistics(cfg)  # once for the three stages
        ret["box_predictors"] = [
            LongTailOutputLayers(
                cfg,
                head.output_shape,
                box2box_transform=stock.box2box_transform,
                class_stats=stats,
            )
            for head, stock in zip(ret["box_heads"], ret["box_predictors"])
        ]
        return ret
