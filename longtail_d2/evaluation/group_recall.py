"""Where a model's per-image detection budget goes, per frequency group.

AP cannot tell "the class is never detected" from "it is detected but ranked low". This report
can: per group (rare, common, frequent), the detections the group gets under the per-image cap,
and the fraction of its ground-truth instances that at least one detection of the same category
and image overlaps at IoU >= a threshold (no one-to-one matching: "is it found at all"), with the
median score of the best-scoring such detection. It is what showed that a cap of 100 detections
per image left sigmoid BCE 3 % of the rare instances against softmax CE's 61 % (README "The
per-image detection cap"; ``tools/evaluate.py --group-recall``).

A class's AP depends on how its detections rank against each other, so the second report looks at
the top of each class's ranking: its n highest-scoring detections over the split, n its number of
instances (the cut of R-precision), and where they lie: on an instance of their class, on another
class's instance (a confusion; by that class's group), or on background.
"""

from typing import Dict

import numpy as np
from pycocotools import mask as mask_util

from .chunked_eval import annotation_area, ground_truth_api
from .detections import Detections
from .lvis_eval import top_detections_per_category, top_detections_per_image

__all__ = ["recall_per_group", "top_ranked_per_group"]


def _overlaps(gt_api, anns, dets, index, iou_type) -> np.ndarray:
    """(len(index), len(anns)) IoU of each detection in ``index`` with each annotation."""
    if iou_type == "bbox":
        d, g = dets.bbox[index].tolist(), [a["bbox"] for a in anns]
    else:
        d, g = dets.select(index).rles(), [gt_api.annToRLE(a) for a in anns]
    return np.asarray(mask_util.iou(d, g, [0] * len(g))).reshape(len(d), len(g))


def _found_scores(gt_api, anns, dets, index, iou_type, iou_thr):
    """(len(anns),) score of the best-scoring detection among ``index`` overlapping each
    annotation at IoU >= iou_thr, nan where none does."""
    iou = _overlaps(gt_api, anns, dets, index, iou_type)
    scores = np.where(iou >= iou_thr, dets.score[index][:, None], -np.inf).max(axis=0)
    return np.where(np.isfinite(scores), scores, np.nan)


def _instances_by_key(gt: dict, key) -> dict:
    """Annotations of non-zero area (lvis-api leaves the others out), grouped by ``key(ann)``."""
    out = {}
    for a in gt["annotations"]:
        if annotation_area(a) > 0:
            out.setdefault(key(a), []).append(a)
    return out


def _prepare(gt: dict, dets: Detections, iou_type: str, max_dets: int):
    """The detections kept under the per-image cap, {category id: group}, and the ground-truth
    API that segm overlaps need (None for bbox)."""
    assert iou_type in ("bbox", "segm"), iou_type
    if iou_type == "segm" and len(dets) and not dets.has_masks:
        raise ValueError("segm overlaps need masks in the detections")
    group_of = {c["id"]: c["frequency"] for c in gt["categories"]}
    gt_api = ground_truth_api(gt) if iou_type == "segm" else None
    return top_detections_per_image(dets, max_dets), group_of, gt_api


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
    dets, group_of, gt_api = _prepare(gt, dets, iou_type, max_dets)
    anns_of = _instances_by_key(gt, lambda a: (a["image_id"], a["category_id"]))
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


def top_ranked_per_group(
    gt: dict, dets: Detections, iou_type: str = "bbox", iou_thr: float = 0.5, max_dets: int = 300
) -> Dict[str, dict]:
    """
    Where the top of each class's ranking lies. For each category with n instances, its n
    highest-scoring detections over all images (after the per-image cap) are classified: "own"
    if it overlaps an instance of its category at IoU >= iou_thr (no one-to-one matching: a
    duplicate counts too), else "other" if it overlaps an instance of another category, else
    "background".

    Args: as :func:`recall_per_group`.

    Returns:
        {group: {"instances": n summed over the group's categories, "ranked": detections looked
        at (fewer than "instances" where a category has fewer detections), "own", "other",
        "background": counts, "other_by_group": {"r", "c", "f": of "other", by the group of the
        best-overlapping other instance}}} for the groups "r", "c", "f".
    """
    dets, group_of, gt_api = _prepare(gt, dets, iou_type, max_dets)
    count_of = {c: len(a) for c, a in _instances_by_key(gt, lambda a: a["category_id"]).items()}
    anns_of_image = _instances_by_key(gt, lambda a: a["image_id"])

    # Each category's n best detections (ties: the earlier one, as the evaluation ranks them).
    top = top_detections_per_category(dets, count_of)
    out = {
        g: {"instances": 0, "ranked": 0, "own": 0, "other": 0, "background": 0,
            "other_by_group": {h: 0 for h in "rcf"}}
        for g in "rcf"
    }
    for c, n in count_of.items():
        out[group_of[c]]["instances"] += n
    by_image = np.argsort(top.image_id, kind="stable")
    image_ids, starts = np.unique(top.image_id[by_image], return_index=True)
    for image_id, index in zip(image_ids.tolist(), np.split(by_image, starts[1:])):
        anns = anns_of_image.get(image_id, [])
        iou = _overlaps(gt_api, anns, top, index, iou_type) if anns else np.zeros((len(index), 0))
        ann_cats = np.array([a["category_id"] for a in anns], np.int64)
        for row, cat in zip(iou, top.category_id[index].tolist()):
            g = out[group_of[cat]]
            g["ranked"] += 1
            same = ann_cats == cat
            if (row[same] >= iou_thr).any():
                g["own"] += 1
            elif (row[~same] >= iou_thr).any():
                g["other"] += 1
                best = int(np.argmax(np.where(same, -1.0, row)))
                g["other_by_group"][group_of[int(ann_cats[best])]] += 1
            else:
                g["background"] += 1
    return out
