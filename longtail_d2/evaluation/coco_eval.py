"""The COCO protocol (pycocotools ``COCOeval``) on faster-coco-eval's COCO mode, plus AP by
training-frequency group.

For exhaustively annotated (COCO-format) sets: every unmatched detection is a false positive,
crowd annotations are ignore regions, at most 100 detections per image and category count.
AP, AP50, AP75, APs, APm, APl are pycocotools' numbers; APr / APc / APf are the mean AP of the
categories of each training-frequency group (rare, common, frequent) that have ground truth.
"""

from typing import Dict, List, Tuple, Union

from .chunked_eval import ground_truth_api, precision_per_category
from .detections import Detections, ResultsError
from .lvis_eval import check_detections, lvis_summary, per_category_ap

__all__ = ["COCO_MAX_DETS", "evaluate_coco"]

COCO_MAX_DETS = (1, 10, 100)  # pycocotools' maxDets; AP is reported at the last


def evaluate_coco(
    coco_gt: dict,
    results: Union[Detections, List[dict]],
    iou_type: str,
    frequency: Dict[int, str],
    gt_api=None,
) -> Tuple[Dict[str, float], Dict[int, float]]:
    """
    Args:
        coco_gt: COCO-format ground truth as in the file (crowd annotations included).
        results: :class:`Detections` or result dicts (dataset category ids).
        iou_type: "bbox" or "segm".
        frequency: {category id: "r" | "c" | "f"}, the groups of the training set.
        gt_api: a :func:`~.chunked_eval.ground_truth_api` of ``coco_gt`` to reuse.
    Returns:
        metrics: {"AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"} in percent.
        per_category_ap: {category id: AP in percent (maxDets 100), nan without ground truth}.
    """
    assert iou_type in ("bbox", "segm"), iou_type
    dets = results if isinstance(results, Detections) else Detections.from_results(results)
    if iou_type == "segm" and len(dets) and not dets.has_masks:
        raise ResultsError("results: segm evaluation needs a 'segmentation' in every detection")
    check_detections(coco_gt, dets)
    cat_ids = sorted(c["id"] for c in coco_gt["categories"])
    out = precision_per_category(
        gt_api or ground_truth_api(coco_gt),
        dets,
        iou_type,
        cat_ids,
        lvis_style=False,
        max_dets=COCO_MAX_DETS,
    )
    metrics = lvis_summary(out["precision"], out["iou_thrs"], [frequency.get(c) for c in cat_ids])
    return metrics, per_category_ap(out["precision"], cat_ids)
