"""faster-coco-eval run over groups of categories, from detection arrays.

COCO and LVIS AP are per category: a category's precision depends only on its own ground truth
and detections (the per-image cap of LVIS is applied before, by the caller). So the categories
are scored in groups whose detections and (image, category) pairs stay bounded, and the
per-category precision arrays are joined: the numbers are those of one run over all categories
(same arrays, same order), at a fraction of its memory (faster-coco-eval keeps a dict entry per
(image, category) pair and a dict per detection).
"""

from typing import Dict, List, Sequence

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster
from pycocotools import mask as mask_util

from .detections import Detections

__all__ = ["ground_truth_api", "precision_per_category", "mean_valid", "AREA_LABELS"]

AREA_LABELS = ("all", "small", "medium", "large")  # faster-coco-eval's default area ranges
# Bounds of one group: detections turned into dicts, and (image, category) pairs evaluated.
MAX_DETS_PER_GROUP = 300_000
MAX_PAIRS_PER_GROUP = 2_000_000


def _quiet(*_args, **_kwargs):
    pass


def ground_truth_api(gt: dict) -> COCO:
    """faster-coco-eval's COCO object over ``gt``. Images and categories are shared, not
    copied; annotations are shallow copies because faster-coco-eval writes into them
    (``ignore``, ``rle``), and ``gt`` may be a cached dict shared with the data loader."""
    api = COCO(print_function=_quiet)
    api.dataset = {
        "images": gt["images"],
        "annotations": [dict(a) for a in gt["annotations"]],
        "categories": gt["categories"],
    }
    api.createIndex()
    return api


def _detection_dicts(dets: Detections, iou_type: str, first_id: int) -> List[dict]:
    """The dicts faster-coco-eval reads (what its loadRes would make, minus unused fields)."""
    if len(dets) == 0:
        return []
    ids = range(first_id, first_id + len(dets))
    common = zip(dets.image_id.tolist(), dets.category_id.tolist(), dets.score.tolist(), ids)
    if iou_type == "bbox":
        area = (dets.bbox[:, 2] * dets.bbox[:, 3]).tolist()  # loadRes: w * h
        return [
            {"image_id": i, "category_id": c, "score": s, "id": k, "iscrowd": 0, "area": a, **b}
            for (i, c, s, k), a, b in zip(common, area, ({"bbox": b} for b in dets.bbox.tolist()))
        ]
    rles = dets.rles()
    area = mask_util.area(rles).tolist()  # loadRes / lvis-api: mask area
    return [
        {"image_id": i, "category_id": c, "score": s, "id": k, "iscrowd": 0, "area": a, **r}
        for (i, c, s, k), a, r in zip(common, area, ({"segmentation": r} for r in rles))
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


def precision_per_category(
    gt_api: COCO,
    dets: Detections,
    iou_type: str,
    cat_ids: Sequence[int],
    *,
    lvis_style: bool,
    max_dets: Sequence[int],
) -> Dict[str, np.ndarray]:
    """
    Args:
        gt_api: from :func:`ground_truth_api`.
        dets: detections, already capped / filtered as the protocol requires.
        cat_ids: sorted dataset category ids to score (the K axis of the result).
        lvis_style: faster-coco-eval's LVIS mode (federated negatives, not-exhaustive ids).
        max_dets: its ``params.maxDets``.
    Returns:
        {"precision": (T, R, K, A, M) array, -1 where a category has no ground truth,
         "iou_thrs": (T,)}.
    """
    cat_ids = np.asarray(sorted(cat_ids), np.int64)
    order = np.argsort(dets.category_id, kind="stable")  # keeps the detections' order per category
    sorted_cats = dets.category_id[order]
    lo = np.searchsorted(sorted_cats, cat_ids, "left")
    hi = np.searchsorted(sorted_cats, cat_ids, "right")
    gt_images = {
        c: np.unique(np.asarray(gt_api.catToImgs.get(c, []), np.int64)) for c in cat_ids.tolist()
    }
    img_counts = [len(gt_images[c]) + (h - l) for c, l, h in zip(cat_ids.tolist(), lo, hi)]
    parts, first_id = [], 1
    iou_thrs = None
    for group in _groups(cat_ids.tolist(), (hi - lo).tolist(), img_counts):
        k0, k1 = np.searchsorted(cat_ids, group[0]), np.searchsorted(cat_ids, group[-1]) + 1
        index = np.sort(order[lo[k0] : hi[k1 - 1]])
        part = dets.select(index)
        images = np.unique(np.concatenate([part.image_id] + [gt_images[c] for c in group]))
        dt_api = COCO(print_function=_quiet)
        dt_api.dataset = {
            "images": [],
            "annotations": _detection_dicts(part, iou_type, first_id),
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
