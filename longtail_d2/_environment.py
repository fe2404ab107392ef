"""What ``import longtail_d2`` checks and quiets before detectron2 is imported: the detectron2
features the package needs (one-line ImportError when missing) and third-party start-up noise."""

import logging
import warnings

__all__ = ["MIN_DETECTRON2", "check_detectron2", "quiet_third_party_noise"]

# detectron2's last tag (v0.6, Nov 2021) predates what we use; its main branch has carried
# __version__ "0.6" since, so features are probed, not version strings.
MIN_DETECTRON2 = "detectron2 from its main branch, 2022 or later (v0.6, the last tag, is too old)"


def _missing_features():
    """Names of the detectron2 features longtail_d2 uses that this detectron2 lacks."""
    from detectron2.config import get_cfg
    from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers

    missing = []
    # The federated loss reuses detectron2's class sampling (added to main in 2022).
    if not hasattr(FastRCNNOutputLayers, "get_fed_loss_classes"):
        missing.append("FastRCNNOutputLayers.get_fed_loss_classes")
    # The predictor rejects detectron2's own switches, which must exist in the config.
    if "USE_FED_LOSS" not in get_cfg().MODEL.ROI_BOX_HEAD:
        missing.append("MODEL.ROI_BOX_HEAD.USE_FED_LOSS")
    return missing


def check_detectron2():
    """Raises a one-line ImportError when detectron2 is absent or too old."""
    try:
        import detectron2
    except ImportError as e:
        raise ImportError(
            f"longtail_d2 needs {MIN_DETECTRON2}; it is not importable ({e}): see README "
            "'detectron2' or run bash tools/setup_env.sh"
        ) from None
    missing = _missing_features()
    if missing:
        version = getattr(detectron2, "__version__", "unknown")
        raise ImportError(
            f"longtail_d2 needs {MIN_DETECTRON2}; found detectron2 {version} at "
            f"{detectron2.__path__[0]}, which lacks {', '.join(missing)}"
        )


class _DropMessages(logging.Filter):
    def __init__(self, *prefixes):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record):
        return not str(record.msg).startswith(self.prefixes)


def quiet_third_party_noise():
    """
    Silences, by message and module, the start-up warnings of torch / fvcore / detectron2 code
    that users cannot act on: ``torch.jit.script`` deprecation (fvcore's and detectron2's
    decorators, at import), ``torch.meshgrid`` without ``indexing`` (detectron2's anchors),
    torch's ``is_fx_tracing`` notice (detectron2's poolers) and torch's "No CUDA runtime"
    (detectron2's environment report on machines without a GPU). Must run before detectron2
    is imported.
    """
    warnings.filterwarnings(
        "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning,
        module=r"torch\.jit\._script",
    )
    warnings.filterwarnings(
        "ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning,
        module=r"torch\.functional",
    )
    logging.getLogger("torch.fx._symbolic_trace").addFilter(
        _DropMessages("is_fx_tracing will return true")
    )
    logging.getLogger("torch.utils.cpp_extension").addFilter(
        _DropMessages("No CUDA runtime is found")
    )
