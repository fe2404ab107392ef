"""Models: classification losses (LONGTAIL_LOSS_REGISTRY), the box predictor and the ROI and
mask heads registered in detectron2's registries."""

from . import losses, roi_heads
from .losses import LONGTAIL_LOSS_REGISTRY, build_classification_loss
from .roi_heads import LongTailCascadeROIHeads, LongTailOutputLayers, LongTailROIHeads
