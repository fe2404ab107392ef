"""Where a model's per-image detection budget goes, per frequency group.

AP cannot tell "the class is never detected" from "it is detected but ranked low". This report
can: per group (rare, common, frequent), the detections the group gets under the per-image cap,
and the fraction of its ground-truth instances that at least one detection of the same category
and image overlaps at IoU >= a threshold (no one-to-one matching: "is it found at all"), with the
median score of the best-scoring such detection. It is what showed that a cap of 100 detections
per image left sigmoid BCE 3 % of the rare instances against softmax CE's 61 % (README "The
per-image detection cap"; ``tools/evaluate.py --group-recall``).
"""

from typing import Dict

import numpy as np
from pycocotools import mask as mask_util

from .chunked_eval import annotation_area, ground_truth_api
from .detections import Detections
from .lvis_eval import top_detections_per_image

__all__ = ["recall_per_group"]


def _found_scores(gt_api, anns, dets, index, iou_type, iou_thr):
    """(len(anns),) score of the best-scoring detection among ``index`` overlapping each
    annotation at IoU >= iou_thr, nan where none does."""
    if iou_type == "bbox":
        d, g = dets.bbox[index].tolist(), [a["bbox"] for a in anns]
    else:
        d, g = dets.select(index).rles(), [gt_api.annToRLE(a) for a in anns]
    iou = np.asarray(mask_util.iou(d, g, [0] * len(g))).reshape(len(d), len(g))
    scores = np.where(iou >= iou_thr, dets.score[index][:, None], -np.inf).max(axis=0)
    return np.where(np.isfinite(scores), scores, np.nan)


def recall_per_group(
    gt: dict, dets: Detections, iou_type: str = "bbox", iou_thr: float = 0.5, max_dets: int = 300
) -> Dict[str, dict]:
    """
    Args:
        gt: LVIS-format ground truth (categories with ``frequency``). Annotations of area 0 are
            left out, as lvis-api does.
        dets: detections; each image keeps its ``max_dets`` best first, as the evaluation does.
        iou_type: "bbox" or "segm" (``dets`` need masks).
        iou_thr: the overlap that counts as found.
        max_dets: the per-image cap (LVIS: 300).

    Returns:
        {group: {"instances": ground-truth instances, "detections": detections kept,
        "found": instances found, "recall": found / instances (nan without instances),
        "median_score": median best score of the found instances (nan if none)}} for the
        groups "r", "c", "f".
    """
    assert iou_type in ("bbox", "segm"), iou_type
    if iou_type == "segm" and len(dets) and not dets.has_masks:
        raise ValueError("segm recall needs masks in the detections")
    dets = top_detections_per_image(dets, max_dets)
    group_of = {c["id"]: c["frequency"] for c in gt["categories"]}
    gt_api = ground_truth_api(gt) if iou_type == "segm" else None
    anns_of = {}
    for a in gt["annotations"]:
        if annotation_area(a) > 0:
            anns_of.setdefault((a["image_id"], a["category_id"]), []).append(a)
    dets_of = {}
    for i, pair in enumerate(zip(dets.image_id.tolist(), dets.category_id.tolist())):
        dets_of.setdefault(pair, []).append(i)
    out = {g: {"instances": 0, "detections": 0, "found": 0, "scores": []} for g in "rcf"}
    for c in dets.category_id.tolist():
        out[group_of[c]]["detections"] += 1
    for (image_id, cat), anns in anns_of.items():
        g = out[group_of[cat]]
        g["instances"] += len(anns)
        index = dets_of.get((image_id, cat))
        if index is None:
            continue
        scores = _found_scores(gt_api, anns, dets, np.asarray(index), iou_type, iou_thr)
        found = scores[~np.isnan(scores)]
        g["found"] += len(found)
        g["scores"] += found.tolist()
    for g in out.values():
        g["recall"] = g["found"] / g["instances"] if g["instances"] else float("nan")
        scores = g.pop("scores")
        g["median_score"] = float(np.median(scores)) if scores else float("nan")
    return out
