"""AP-fixed and AP-pool (Dave et al. 2021, "Evaluating Large-Vocabulary Object Detectors: The
Devil is in the Details"; reference implementation: achalddave/large-vocab-devil).

LVIS's cap of 300 detections per image makes one category's AP depend on the scores of the
others (a confident frequent class pushes rare detections out of the image's top 300). Both
metrics drop the per-image cap and keep instead the top K detections of each category over the
whole dataset (K = 10,000 for LVIS).

- **AP-fixed**: otherwise the LVIS protocol (federated negatives, not-exhaustive ids, AP per
  category averaged): :func:`~.lvis_eval.evaluate_lvis` with ``dets_per_category=K``.
- **AP-pool**: detections are matched to ground truth per image and category as in LVIS, but
  precision and recall are computed once over all detections of a pool of categories (all, or
  one frequency group) ranked together by score, so the metric rewards scores that are
  comparable across categories (calibration). Area range "all" only.

AP-pool is computed with faster-coco-eval's LVIS mode by giving each (image, category) pair its
own virtual image whose only category is the pool: matching stays within the pair and the
single category's accumulation pools every pair, in lvis-api's image-major order.
"""

from typing import Dict, List, Union

import numpy as np

from .chunked_eval import detection_area, ground_truth_api, mean_valid, precision_per_category
from .detections import Detections, ResultsError
from .lvis_eval import (
    check_detections,
    federated_filter,
    positive_area_ground_truth,
    top_detections_per_category,
)

__all__ = ["LVIS_DETS_PER_CATEGORY", "POOL_METRICS", "evaluate_ap_pool"]

LVIS_DETS_PER_CATEGORY = 10_000  # the paper's K for LVIS v1
POOL_METRICS = ("AP", "AP50", "AP75", "APr", "APc", "APf")


def _virtual_ground_truth(lvis_gt, dets, pool_of_category):
    """The ground truth and detections re-indexed by (image, category) pair (see module doc).

    Args:
        pool_of_category: {category id: pool category id}.
    """
    images = sorted(lvis_gt["images"], key=lambda im: im["id"])
    image_ids = np.array([im["id"] for im in images], np.int64)
    cat_ids = np.array(sorted(pool_of_category), np.int64)
    n = len(cat_ids)

    def keys(img, cat):
        return np.searchsorted(image_ids, img) * n + np.searchsorted(cat_ids, cat)

    anns = lvis_gt["annotations"]
    ann_keys = keys(
        np.fromiter((a["image_id"] for a in anns), np.int64, len(anns)),
        np.fromiter((a["category_id"] for a in anns), np.int64, len(anns)),
    )
    det_keys = keys(dets.image_id, dets.category_id)
    pairs = np.unique(np.concatenate([ann_keys, det_keys]))  # image-major, then category

    def listed(field):
        flat = [(im["id"], c) for im in images for c in im.get(field, []) if c in pool_of_category]
        flat = np.array(flat, np.int64).reshape(-1, 2)
        return np.isin(pairs, keys(flat[:, 0], flat[:, 1]))

    neg, not_exhaustive = listed("neg_category_ids"), listed("not_exhaustive_category_ids")
    pool = np.array([pool_of_category[c] for c in cat_ids.tolist()], np.int64)[pairs % n]
    v_images = [
        {
            "id": v + 1,
            "height": images[i]["height"],
            "width": images[i]["width"],
            "neg_category_ids": [p] if ng else [],
            "not_exhaustive_category_ids": [p] if ne else [],
        }
        for v, (i, p, ng, ne) in enumerate(
            zip((pairs // n).tolist(), pool.tolist(), neg.tolist(), not_exhaustive.tolist())
        )
    ]
    ann_vid = np.searchsorted(pairs, ann_keys) + 1
    v_anns = [
        dict(a, image_id=v, category_id=p)
        for a, v, p in zip(anns, ann_vid.tolist(), pool[ann_vid - 1].tolist())
    ]
    det_vid = np.searchsorted(pairs, det_keys) + 1
    v_dets = Detections(det_vid, pool[det_vid - 1], dets.score, dets.bbox)
    v_dets.rle_bytes, v_dets.rle_offsets, v_dets.mask_size = (
        dets.rle_bytes,
        dets.rle_offsets,
        dets.mask_size,
    )
    pool_ids = sorted(set(pool_of_category.values()))
    v_cats = [{"id": p, "name": str(p), "frequency": "f"} for p in pool_ids]
    return {"images": v_images, "annotations": v_anns, "categories": v_cats}, v_dets, pool_ids


def evaluate_ap_pool(
    lvis_gt: dict,
    results: Union[Detections, List[dict]],
    iou_type: str,
    dets_per_category: int = LVIS_DETS_PER_CATEGORY,
) -> Dict[str, float]:
    """
    Args:
        lvis_gt: LVIS-format ground truth (categories with ``frequency``). Not modified.
        results: :class:`Detections` or result dicts.
        dets_per_category: K, detections kept per category over the dataset (<= 0: all).
    Returns:
        {"AP", "AP50", "AP75", "APr", "APc", "APf"}: pooled AP in percent over all categories
        and over each frequency group (nan where the pool has no ground truth).
    """
    assert iou_type in ("bbox", "segm"), iou_type
    dets = results if isinstance(results, Detections) else Detections.from_results(results)
    if iou_type == "segm" and len(dets) and not dets.has_masks:
        raise ResultsError("results: segm evaluation needs a 'segmentation' in every detection")
    check_detections(lvis_gt, dets)
    lvis_gt = positive_area_ground_truth(lvis_gt)  # area 0 is not evaluated (lvis-api)
    if dets_per_category > 0:
        dets = top_detections_per_category(dets, dets_per_category)
    dets = federated_filter(lvis_gt, dets)
    dets = dets.select(detection_area(dets, iou_type) > 0)
    frequency = {c["id"]: c["frequency"] for c in lvis_gt["categories"]}
    out = {}
    # One run pools every category; a second pools each group (pool ids 1, 2, 3 = r, c, f).
    for pools in ({c: 1 for c in frequency}, {c: 1 + "rcf".index(f) for c, f in frequency.items()}):
        gt, v_dets, pool_ids = _virtual_ground_truth(lvis_gt, dets, pools)
        counts = np.unique(v_dets.image_id, return_counts=True)[1]
        cap = int(counts.max()) if counts.size else 1  # no per-image cap
        res = precision_per_category(
            ground_truth_api(gt), v_dets, iou_type, pool_ids, lvis_style=True, max_dets=[cap]
        )
        p, iou_thrs = res["precision"][:, :, :, 0, -1], res["iou_thrs"]
        for k, pool_id in enumerate(pool_ids):
            if len(pool_ids) == 1:
                t50, t75 = np.where(0.5 == iou_thrs)[0], np.where(0.75 == iou_thrs)[0]
                out["AP"] = mean_valid(p[:, :, k]) * 100
                out["AP50"] = mean_valid(p[t50][:, :, k]) * 100
                out["AP75"] = mean_valid(p[t75][:, :, k]) * 100
            else:
                out["AP" + "rcf"[pool_id - 1]] = mean_valid(p[:, :, k]) * 100
    for g in "rcf":
        out.setdefault("AP" + g, float("nan"))  # a group without categories
    return {k: out[k] for k in POOL_METRICS}
