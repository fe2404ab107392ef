"""The LVIS protocol (Gupta et al. 2019; lvis-api ``LVISEval``) on faster-coco-eval's LVIS mode.

PyPI's ``lvis==0.5.3`` crashes on numpy >= 1.24 (``np.float``); faster-coco-eval's LVIS mode
gives the same numbers (tests/evaluation/test_lvis_eval.py checks it against lvis-api).
Protocol: the top ``max_dets`` detections of each image over all categories; a detection of
category c in image I counts only if c is annotated in I or in ``neg_category_ids(I)``;
unmatched detections of c are ignored where c is in ``not_exhaustive_category_ids(I)``.
"""

import copy
import logging
from collections import defaultdict
from typing import Dict, List, Tuple

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

__all__ = ["LVIS_METRICS", "evaluate_lvis", "top_detections_per_image"]

logger = logging.getLogger(__name__)

LVIS_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
# faster-coco-eval's names of the same numbers.
_FCE_NAMES = ("AP_all", "AP_50", "AP_75", "AP_small", "AP_medium", "AP_large", "APr", "APc", "APf")


def top_detections_per_image(results: List[dict], max_dets: int) -> List[dict]:
    """Keeps the ``max_dets`` highest-scoring detections of each image (lvis-api's LVISResults)."""
    per_image = defaultdict(list)
    for r in results:
        per_image[r["image_id"]].append(r)
    kept = []
    for dets in per_image.values():
        kept.extend(sorted(dets, key=lambda d: -d["score"])[:max_dets])
    return kept


def _no_detections(lvis_gt):
    """What lvis-api reports without detections: 0 where a category, area range or frequency
    group has ground truth, nan (its -1) elsewhere."""
    with_gt = {a["category_id"] for a in lvis_gt["annotations"]}
    per_category = {
        c["id"]: 0.0 if c["id"] in with_gt else float("nan") for c in lvis_gt["categories"]
    }
    areas = [a["area"] for a in lvis_gt["annotations"]]
    groups = {c["frequency"] for c in lvis_gt["categories"] if c["id"] in with_gt}
    present = {
        "AP": bool(with_gt),
        "AP50": bool(with_gt),
        "AP75": bool(with_gt),
        "APs": any(a < 32**2 for a in areas),
        "APm": any(32**2 <= a < 96**2 for a in areas),
        "APl": any(a >= 96**2 for a in areas),
        "APr": "r" in groups,
        "APc": "c" in groups,
        "APf": "f" in groups,
    }
    return {k: 0.0 if present[k] else float("nan") for k in LVIS_METRICS}, per_category


def evaluate_lvis(
    lvis_gt: dict, results: List[dict], iou_type: str, max_dets: int = 300
) -> Tuple[Dict[str, float], Dict[int, float]]:
    """
    Args:
        lvis_gt: LVIS-format ground truth (images with ``neg_category_ids`` and
            ``not_exhaustive_category_ids``, categories with ``frequency``). Not modified.
        results: detections in LVIS/COCO result format (``image_id``, ``category_id`` (dataset
            id), ``score``, ``bbox`` XYWH and/or ``segmentation`` RLE).
        iou_type: "bbox" or "segm".
        max_dets: detections kept per image.

    Returns:
        metrics: {"AP", "AP50", ..., "APf"} in percent (nan where a group has no category).
        per_category_ap: {category id: AP in percent, nan if the category has no ground truth}.
    """
    assert iou_type in ("bbox", "segm"), iou_type
    if len(results) == 0:
        logger.warning("No detections to evaluate: AP is 0 wherever there is ground truth")
        return _no_detections(lvis_gt)
    # Boxes and masks are scored separately: the other field must not set a detection's area.
    drop = "segmentation" if iou_type == "bbox" else "bbox"
    results = [{k: v for k, v in r.items() if k != drop} for r in results]
    results = top_detections_per_image(results, max_dets)

    gt = COCO(copy.deepcopy(lvis_gt))
    dt = gt.loadRes(results)
    # Its own summary print is replaced by the evaluator's table.
    evaluator = COCOeval_faster(gt, dt, iou_type, lvis_style=True, print_function=lambda *_: None)
    evaluator.params.maxDets = [max_dets]
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    stats = evaluator.stats_as_dict
    metrics = {k: float(stats[n]) * 100 for k, n in zip(LVIS_METRICS, _FCE_NAMES)}
    metrics = {k: (v if v >= 0 else float("nan")) for k, v in metrics.items()}

    # precision: (iou thresholds, recall points, categories, area ranges, max dets); -1 = no GT.
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    per_category = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        p = precision[:, :, k]
        p = p[p > -1]
        per_category[int(cat_id)] = float(np.mean(p)) * 100 if p.size else float("nan")
    return metrics, per_category
