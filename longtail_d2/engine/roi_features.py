"""The classifier's view of a batch: box-head features and labels of the RoIs detectron2
samples in training, computed without gradients (BALMS's meta step, FASA's held-out pass)."""

import torch
from detectron2.layers import cat
from detectron2.modeling.roi_heads import StandardROIHeads

__all__ = ["roi_box_features", "check_roi_features_supported"]


def check_roi_features_supported(heads):
    """Raises ValueError unless ``heads`` feeds its predictor the way :func:`roi_box_features`
    replays: detectron2's StandardROIHeads box path (pooler, one box head, the predictor),
    not overridden (PCB's iterative head) and not a cascade."""
    name = type(heads).__name__  # for the message only
    if not isinstance(heads, StandardROIHeads):
        raise ValueError(
            f"RoI features for the classifier need detectron2's standard ROI heads; {name} "
            "(MODEL.ROI_HEADS.NAME) is not one, which they cannot replay"
        )
    if type(heads)._forward_box is not StandardROIHeads._forward_box:
        raise ValueError(
            f"RoI features for the classifier: {name} (MODEL.ROI_HEADS.NAME) replaces "
            "detectron2's box path (_forward_box; cascade and PCB heads do), which they cannot "
            "replay"
        )


@torch.no_grad()
def roi_box_features(detector, batched_inputs):
    """(R, D) box-head features and (R,) labels of the RoIs detectron2 samples in training."""
    heads = detector.roi_heads
    check_roi_features_supported(heads)
    images = detector.preprocess_image(batched_inputs)
    gt_instances = [x["instances"].to(detector.device) for x in batched_inputs]
    features = detector.backbone(images.tensor)
    proposals, _ = detector.proposal_generator(images, features, gt_instances)
    proposals = heads.label_and_sample_proposals(proposals, gt_instances)
    x = heads.box_pooler(
        [features[f] for f in heads.box_in_features], [p.proposal_boxes for p in proposals]
    )
    return heads.box_head(x), cat([p.gt_classes for p in proposals])
