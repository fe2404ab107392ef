"""faster-coco-eval run over groups of categories, from detection arrays.

COCO and LVIS AP are per category: a category's precision depends only on its own ground truth
and detections (the per-image cap of LVIS is applied before, by the caller). So the categories
are scored in groups whose detections and (image, category) pairs stay bounded, and the
per-category precision arrays are joined: the numbers are those of one run over all categories
(same arrays, same order), at a fraction of its memory (faster-coco-eval keeps a dict entry per
(image, category) pair and a dict per detection).
"""

import gc
from typing import Dict, List, Optional, Sequence

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster
from faster_coco_eval.core import mask as fce_mask

from .detections import Detections

__all__ = [
    "ground_truth_api",
    "annotation_area",
    "detection_area",
    "precision_per_category",
    "mean_valid",
    "AREA_LABELS",
]

AREA_LABELS = ("all", "small", "medium", "large")  # faster-coco-eval's default area ranges
# Bounds of one group: detections turned into dicts, and (image, category) pairs evaluated
# (faster-coco-eval visits every pair of its images x categories; small groups of categories
# with the images where they occur visit few empty pairs).
MAX_DETS_PER_GROUP = 300_000
MAX_PAIRS_PER_GROUP = 2_000


def _quiet(*_args, **_kwargs):
    pass


def annotation_area(ann: dict) -> float:
    """An annotation's ``area``; absent from some COCO-style files: the box area."""
    return float(ann["area"]) if "area" in ann else float(ann["bbox"][2] * ann["bbox"][3])


def ground_truth_api(gt: dict) -> COCO:
    """faster-coco-eval's COCO object over ``gt``. Images and categories are shared, not
    copied; annotations are shallow copies because faster-coco-eval writes into them
    (``ignore``, ``rle``), and ``gt`` may be a cached dict shared with the data loader."""
    api = COCO(print_function=_quiet)
    anns = [dict(a) for a in gt["annotations"]]
    for a in anns:
        if "area" not in a:
            a["area"] = annotation_area(a)
    api.dataset = {"images": gt["images"], "annotations": anns, "categories": gt["categories"]}
    api.createIndex()
    return api


def detection_area(dets: Detections, iou_type: str) -> np.ndarray:
    """(N,) the area faster-coco-eval's loadRes and lvis-api's LVISResults give each detection:
    box w * h for bbox, mask area for segm."""
    if iou_type == "bbox":
        return dets.bbox[:, 2] * dets.bbox[:, 3]
    if len(dets) == 0:
        return np.zeros(0)
    # pycocotools' area() fails on numpy 2 beyond 255 masks: faster-coco-eval's
    return np.asarray(fce_mask.area(dets.rles()), np.float64)


def _detection_dicts(
    dets: Detections, iou_type: str, first_id: int, area: Optional[np.ndarray]
) -> List[dict]:
    """The dicts faster-coco-eval reads (what its loadRes would make, minus unused fields)."""
    if len(dets) == 0:
        return []
    ids = range(first_id, first_id + len(dets))
    common = zip(dets.image_id.tolist(), dets.category_id.tolist(), dets.score.tolist(), ids)
    if iou_type == "bbox":
        area = (detection_area(dets, iou_type) if area is None else area).tolist()
        return [
            {"image_id": i, "category_id": c, "score": s, "id": k, "iscrowd": 0, "area": a, **b}
            for (i, c, s, k), a, b in zip(common, area, ({"bbox": b} for b in dets.bbox.tolist()))
        ]
    rles = dets.rles()
    if area is None:
        area = np.asarray(fce_mask.area(rles))  # = detection_area, without a second rles()
    return [
        {"image_id": i, "category_id": c, "score": s, "id": k, "iscrowd": 0, "area": a, **r}
        for (i, c, s, k), a, r in zip(common, area.tolist(), ({"segmentation": r} for r in rles))
    ]


def _groups(cat_ids, det_counts, img_counts):
    """Consecutive groups of categories within the bounds above."""
    groups, current, dets, imgs = [], [], 0, 0
    for c, nd, ni in zip(cat_ids, det_counts, img_counts):
        if current and (
            dets + nd > MAX_DETS_PER_GROUP or (imgs + ni) * (len(current) + 1) > MAX_PAIRS_PER_GROUP
        ):
            groups.append(current)
            current, dets, imgs = [], 0, 0
        current.append(c)
        dets, imgs = dets + nd, imgs + ni
    if current:
        groups.append(current)
    return groups


def precision_per_category(*args, **kwargs) -> Dict[str, np.ndarray]:
    """:func:`_precision_per_category` with Python's cyclic garbage collector paused: it would
    otherwise rescan the (many, acyclic) detection dicts again and again as they are made."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _precision_per_category(*args, **kwargs)
    finally:
        if enabled:
            gc.enable()


def _precision_per_category(
    gt_api: COCO,
    dets: Detections,
    iou_type: str,
    cat_ids: Sequence[int],
    *,
    lvis_style: bool,
    max_dets: Sequence[int],
    area: Optional[np.ndarray] = None,
) -> Dict[str, np.ndarray]:
    """
    Args:
        gt_api: from :func:`ground_truth_api`.
        dets: detections, already capped / filtered as the protocol requires.
        cat_ids: sorted dataset category ids to score (the K axis of the result).
        lvis_style: faster-coco-eval's LVIS mode (federated negatives, not-exhaustive ids).
        max_dets: its ``params.maxDets``.
        area: (N,) :func:`detection_area` of ``dets`` when the caller has it (computed per
            group otherwise).
    Returns:
        {"precision": (T, R, K, A, M) array, -1 where a category has no ground truth,
         "iou_thrs": (T,)}.
    """
    cat_ids = np.asarray(sorted(cat_ids), np.int64)
    order = np.argsort(dets.category_id, kind="stable")  # keeps the detections' order per category
    sorted_cats = dets.category_id[order]
    lo = np.searchsorted(sorted_cats, cat_ids, "left")
    hi = np.searchsorted(sorted_cats, cat_ids, "right")
    # The images where each category has ground truth or detections: the only ones whose
    # (image, category) pairs faster-coco-eval needs to visit.
    images_of = {
        c: np.union1d(
            np.asarray(gt_api.catToImgs.get(c, []), np.int64), dets.image_id[order[l:h]]
        )
        for c, l, h in zip(cat_ids.tolist(), lo, hi)
    }
    img_counts = [len(images_of[c]) for c in cat_ids.tolist()]
    parts, first_id = [], 1
    iou_thrs = None
    for group in _groups(cat_ids.tolist(), (hi - lo).tolist(), img_counts):
        k0, k1 = np.searchsorted(cat_ids, group[0]), np.searchsorted(cat_ids, group[-1]) + 1
        index = np.sort(order[lo[k0] : hi[k1 - 1]])
        part = dets.select(index)
        images = np.unique(np.concatenate([np.zeros(0, np.int64)] + [images_of[c] for c in group]))
        dt_api = COCO(print_function=_quiet)
        dt_api.dataset = {
            "images": [],
            "annotations": _detection_dicts(
                part, iou_type, first_id, None if area is None else area[index]
            ),
            "categories": gt_api.dataset["categories"],
        }
        dt_api.createIndex()
        dt_api.imgs = gt_api.imgs
        first_id += len(part)
        ev = COCOeval_faster(gt_api, dt_api, iou_type, lvis_style=lvis_style, print_function=_quiet)
        ev.params.imgIds = images.tolist()
        ev.params.catIds = list(group)
        ev.params.maxDets = list(max_dets)
        if len(images):
            ev.evaluate()
            ev.accumulate()
            parts.append(ev.eval["precision"])
        else:  # no ground truth and no detection in any image: -1 (no AP) for the group
            shape = (len(ev.params.iouThrs), len(ev.params.recThrs), len(group), 4, len(max_dets))
            parts.append(-np.ones(shape))
        iou_thrs = ev.params.iouThrs
        del ev, dt_api
    if not parts:
        raise ValueError("no categories to evaluate")
    return {"precision": np.concatenate(parts, axis=2), "iou_thrs": iou_thrs}


def mean_valid(s: np.ndarray) -> float:
    """faster-coco-eval's / pycocotools' summary: mean of the entries > -1, nan if none."""
    valid = s[s > -1]
    return float(np.mean(valid)) if valid.size else float("nan")
