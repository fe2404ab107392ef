"""The LVIS protocol (Gupta et al. 2019; lvis-api ``LVISEval``) on faster-coco-eval's LVIS mode,
from detection arrays.

PyPI's ``lvis==0.5.3`` crashes on numpy >= 1.24 (``np.float``); faster-coco-eval's LVIS mode
gives the same numbers (tests/evaluation/test_lvis_eval.py checks it against lvis-api).
Protocol: the top ``max_dets`` detections of each image over all categories; a detection of
category c in image I counts only if c is annotated in I or in ``neg_category_ids(I)``;
unmatched detections of c are ignored where c is in ``not_exhaustive_category_ids(I)``;
only annotations and detections of area > 0 are evaluated (lvis-api's ``LVIS.get_ann_ids``
keeps ``area > 0``: a detection with an empty mask or a zero-width box is dropped, after the
cap, where faster-coco-eval would count it as a false positive in the "all" and "small" ranges).

The per-image cap and the federated filter are done here with numpy (the filter drops what
faster-coco-eval would drop, before any dict is made), then the categories are scored in
bounded groups (:mod:`.chunked_eval`).
"""

import logging
from typing import Dict, List, Tuple, Union

import numpy as np

from .chunked_eval import (
    AREA_LABELS,
    annotation_area,
    detection_area,
    ground_truth_api,
    mean_valid,
    precision_per_category,
)
from .detections import Detections, ResultsError

__all__ = [
    "LVIS_METRICS",
    "evaluate_lvis",
    "lvis_summary",
    "top_detections_per_image",
    "top_detections_per_category",
    "federated_filter",
    "positive_area_ground_truth",
    "check_detections",
]

logger = logging.getLogger(__name__)

LVIS_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")


def _as_detections(results) -> Detections:
    return results if isinstance(results, Detections) else Detections.from_results(results)


def _top_k(groups: np.ndarray, score: np.ndarray, k: Union[int, Dict[int, int]]) -> np.ndarray:
    """Indices (ascending) of the k highest scores of each group (k: one for all, or per group,
    0 for a group absent from it); ties keep the earlier detection, as Python's stable
    ``sorted(..., reverse=True)`` of lvis-api."""
    by_score = np.argsort(-score, kind="stable")
    order = by_score[np.argsort(groups[by_score], kind="stable")]
    g = groups[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    sizes = np.diff(np.r_[starts, len(g)])
    rank = np.arange(len(g)) - np.repeat(starts, sizes)
    if isinstance(k, dict):
        k = np.array([k.get(x, 0) for x in g.tolist()], np.int64)
    return np.sort(order[rank < k])


def top_detections_per_image(dets: Detections, max_dets: int) -> Detections:
    """The ``max_dets`` highest-scoring detections of each image (lvis-api's LVISResults)."""
    return dets.select(_top_k(dets.image_id, dets.score, max_dets))


def top_detections_per_category(dets: Detections, k: Union[int, Dict[int, int]]) -> Detections:
    """The ``k`` highest-scoring detections of each category over the whole dataset (AP-fixed;
    ``k`` one for all categories or {category id: k})."""
    return dets.select(_top_k(dets.category_id, dets.score, k))


def check_detections(gt: dict, dets: Detections, source: str = "results"):
    """One-line :class:`ResultsError` for an image or category id absent from the ground truth."""
    for ids, key, what in (
        (dets.image_id, "images", "image_id"),
        (dets.category_id, "categories", "category_id"),
    ):
        known = np.array(sorted(x["id"] for x in gt[key]), np.int64)
        bad = ~np.isin(ids, known)
        if bad.any():
            raise ResultsError(
                f"{source}: {what} {int(ids[bad][0])} is not in the ground truth's {key} "
                f"({int(bad.sum())} detections)"
            )


def _pair_keys(image_id, category_id, num_cats, cat_index):
    return image_id.astype(np.int64) * num_cats + np.searchsorted(cat_index, category_id)


def federated_filter(gt: dict, dets: Detections) -> Detections:
    """Keeps the detections of category c in image I where c is annotated in I or is one of
    I's ``neg_category_ids`` (LVIS's federated rule; everything else is ignored by lvis-api
    and dropped by faster-coco-eval's LVIS mode)."""
    cat_index = np.array(sorted(c["id"] for c in gt["categories"]), np.int64)
    n = len(cat_index)
    ann_img = np.fromiter((a["image_id"] for a in gt["annotations"]), np.int64)
    ann_cat = np.fromiter((a["category_id"] for a in gt["annotations"]), np.int64)
    neg = [(img["id"], c) for img in gt["images"] for c in img.get("neg_category_ids", [])]
    neg = np.array(neg, np.int64).reshape(-1, 2)
    positive = _pair_keys(ann_img, ann_cat, n, cat_index)
    negative = _pair_keys(neg[:, 0], neg[:, 1], n, cat_index)
    allowed = np.unique(np.concatenate([positive, negative]))
    return dets.select(np.isin(_pair_keys(dets.image_id, dets.category_id, n, cat_index), allowed))


def positive_area_ground_truth(gt: dict) -> dict:
    """``gt`` without the annotations lvis-api leaves out: it evaluates those of area > 0 only
    (``LVIS.get_ann_ids``), so an annotation of area 0 is neither ground truth nor makes its
    category present in its image. ``gt`` itself (no copy) when there is none."""
    anns = gt["annotations"]
    keep = [a for a in anns if annotation_area(a) > 0]
    return gt if len(keep) == len(anns) else dict(gt, annotations=keep)


def lvis_summary(precision: np.ndarray, iou_thrs, frequency: List[str]) -> Dict[str, float]:
    """AP, AP50, ... APf in percent (nan where nothing has ground truth) from the precision
    array (T, R, K, A, M) of faster-coco-eval / lvis-api, at the last M."""
    p = precision[..., -1]
    t50, t75 = np.where(0.5 == iou_thrs)[0], np.where(0.75 == iou_thrs)[0]
    freq = np.asarray(frequency)
    out = {
        "AP": mean_valid(p[:, :, :, 0]),
        "AP50": mean_valid(p[t50][:, :, :, 0]),
        "AP75": mean_valid(p[t75][:, :, :, 0]),
    }
    for key, label in zip(("APs", "APm", "APl"), AREA_LABELS[1:]):
        out[key] = mean_valid(p[:, :, :, AREA_LABELS.index(label)])
    for g in "rcf":
        out[f"AP{g}"] = mean_valid(p[:, :, np.flatnonzero(freq == g), 0])
    return {k: v * 100 for k, v in out.items()}


def per_category_ap(precision: np.ndarray, cat_ids) -> Dict[int, float]:
    """{category id: AP in percent over IoU thresholds and recall points, nan without GT}."""
    p = precision[:, :, :, 0, -1]
    return {int(c): mean_valid(p[:, :, k]) * 100 for k, c in enumerate(cat_ids)}


def evaluate_lvis(
    lvis_gt: dict,
    results: Union[Detections, List[dict]],
    iou_type: str,
    max_dets: int = 300,
    dets_per_category: int = 0,
    gt_api=None,
) -> Tuple[Dict[str, float], Dict[int, float]]:
    """
    Args:
        lvis_gt: LVIS-format ground truth (images with ``neg_category_ids`` and
            ``not_exhaustive_category_ids``, categories with ``frequency``). Not modified.
        results: :class:`Detections` or result dicts (``image_id``, ``category_id`` (dataset
            id), ``score``, ``bbox`` XYWH and / or ``segmentation`` RLE).
        iou_type: "bbox" or "segm".
        max_dets: detections kept per image (LVIS: 300); ignored when dets_per_category > 0.
        dets_per_category: > 0 gives AP-fixed (Dave et al. 2021): the top ``dets_per_category``
            detections of each category over the dataset, no per-image cap.
        gt_api: a :func:`~.chunked_eval.ground_truth_api` of ``lvis_gt`` to reuse (not used
            when ``lvis_gt`` has annotations of area 0: one without them is made).

    Returns:
        metrics: {"AP", "AP50", ..., "APf"} in percent (nan where a group has no category).
        per_category_ap: {category id: AP in percent, nan if the category has no ground truth}.
    """
    assert iou_type in ("bbox", "segm"), iou_type
    evaluated_gt = positive_area_ground_truth(lvis_gt)
    if evaluated_gt is not lvis_gt:
        lvis_gt, gt_api = evaluated_gt, None
    dets = _as_detections(results)
    if iou_type == "segm" and len(dets) and not dets.has_masks:
        raise ResultsError("results: segm evaluation needs a 'segmentation' in every detection")
    check_detections(lvis_gt, dets)
    if len(dets) == 0:
        logger.warning("No detections to evaluate: AP is 0 wherever there is ground truth")
    if dets_per_category > 0:
        dets = top_detections_per_category(dets, dets_per_category)
        counts = np.unique(dets.image_id, return_counts=True)[1]
        cap = int(counts.max()) if counts.size else 1  # no per-image cap
    else:
        dets = top_detections_per_image(dets, max_dets)
        cap = max_dets
    dets = federated_filter(lvis_gt, dets)
    # Area 0 (empty mask, zero-width box): dropped as lvis-api does, once the cap is applied.
    area = detection_area(dets, iou_type)
    keep = area > 0
    dets, area = dets.select(keep), area[keep]
    categories = sorted(lvis_gt["categories"], key=lambda c: c["id"])
    cat_ids = [c["id"] for c in categories]
    gt_api = gt_api or ground_truth_api(lvis_gt)
    out = precision_per_category(
        gt_api, dets, iou_type, cat_ids, lvis_style=True, max_dets=[cap], area=area
    )
    metrics = lvis_summary(out["precision"], out["iou_thrs"], [c["frequency"] for c in categories])
    return metrics, per_category_ap(out["precision"], cat_ids)
