"""Seesaw's "normed mask" head: detectron2's mask head whose final 1x1 conv is cosine-normalised
(per-pixel feature and per-class filter L2-normalised, times tau)."""

from detectron2.config import configurable
from detectron2.modeling.roi_heads import ROI_MASK_HEAD_REGISTRY, MaskRCNNConvUpsampleHead

from .normed_layers import NormedConv2d

__all__ = ["NormedMaskRCNNConvUpsampleHead"]


@ROI_MASK_HEAD_REGISTRY.register()
class NormedMaskRCNNConvUpsampleHead(MaskRCNNConvUpsampleHead):
    @configurable
    def __init__(self, input_shape, *, temperature: float = 20.0, **kwargs):
        super().__init__(input_shape, **kwargs)
        self.predictor = NormedConv2d(
            self.predictor.in_channels, self.predictor.out_channels, temperature
        )

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["temperature"] = cfg.MODEL.ROI_MASK_HEAD.NORMED_TEMPERATURE
        return ret
