"""longtail_d2: long-tailed instance segmentation methods as a Detectron2 plugin."""

from . import data  # noqa: F401  (adds frequency groups to detectron2's builtin LVIS sets)
from . import modeling  # noqa: F401  (registers the ROI heads, mask head and losses)
from .config import add_longtail_config

__all__ = ["add_longtail_config"]
