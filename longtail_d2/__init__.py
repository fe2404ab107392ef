"""longtail_d2: long-tailed instance segmentation methods as a Detectron2 plugin."""

from . import data  # noqa: F401  (adds class statistics to detectron2's builtin LVIS sets)
from .config import add_longtail_config

__all__ = ["add_longtail_config"]
