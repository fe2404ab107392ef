"""longtail_d2: long-tailed instance segmentation methods as a Detectron2 plugin."""

from ._environment import check_detectron2, quiet_third_party_noise

# Before anything imports detectron2: its (and torch's) start-up deprecation noise, then a
# one-line error if detectron2 is missing or older than what longtail_d2 uses.
quiet_third_party_noise()
check_detectron2()

from . import data  # noqa: F401,E402  (dataset registration and class statistics)
from . import modeling  # noqa: F401,E402  (registers the ROI heads, mask head and losses)
from .config import add_longtail_config  # noqa: E402

__all__ = ["add_longtail_config"]
