from .mask_head import NormedMaskRCNNConvUpsampleHead
from .normed_layers import NormedConv2d, NormedLinear
from .predictor import LongTailOutputLayers
from .roi_heads import LongTailCascadeROIHeads, LongTailROIHeads
from .pcb_heads import PCBOutputLayers, PCBROIHeads
from .fasa_heads import FASAOutputLayers, FASAROIHeads
