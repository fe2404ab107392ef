"""The classifier's view of a batch: box-head features and labels of the RoIs detectron2
samples in training, computed without gradients (BALMS's meta step, FASA's held-out pass)."""

import torch
from detectron2.layers import cat

__all__ = ["roi_box_features"]


@torch.no_grad()
def roi_box_features(detector, batched_inputs):
    """(R, D) box-head features and (R,) labels of the RoIs detectron2 samples in training."""
    images = detector.preprocess_image(batched_inputs)
    gt_instances = [x["instances"].to(detector.device) for x in batched_inputs]
    features = detector.backbone(images.tensor)
    proposals, _ = detector.proposal_generator(images, features, gt_instances)
    heads = detector.roi_heads
    proposals = heads.label_and_sample_proposals(proposals, gt_instances)
    x = heads.box_pooler(
        [features[f] for f in heads.box_in_features], [p.proposal_boxes for p in proposals]
    )
    return heads.box_head(x), cat([p.gt_classes for p in proposals])
