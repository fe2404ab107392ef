"""Evaluation-sampling noise of LVIS metrics by the image bootstrap (Efron & Tibshirani 1993).

A test split is a sample of images; the metrics measured on it would move if the images were
drawn again. The bootstrap estimates by how much: draw the evaluation images with replacement
(as many as there are), score the resampled dataset with the same protocol, repeat, and take
the standard deviation of the metric over the resamples. This is the noise of the evaluation
alone, with the model fixed; a method's spread over training seeds holds it plus the training
noise.

Resampling is by image, not by detection or annotation: an image's ground truth, federated
lists and detections stay together, since AP's matching and LVIS's per-image cap and
negative / not-exhaustive rules act per image. An image drawn k times enters the resample as k
images with the same content and distinct ids.

Only the standard deviation is reported (no percentile or normal intervals): it is what is
compared with the seed std, and 100 resamples estimate a std to ~7 % (relative error
1 / sqrt(2 (N - 1))) where tail percentiles would need thousands.
"""

import logging
import math
import time
from typing import Dict, List, Tuple

import numpy as np

from .detections import Detections
from .lvis_eval import check_detections, evaluate_lvis

__all__ = [
    "draw_resamples",
    "resample_dataset",
    "bootstrap_lvis_metrics",
    "summarize_samples",
]

logger = logging.getLogger(__name__)


def draw_resamples(num_images: int, num_samples: int, seed: int) -> np.ndarray:
    """(num_samples, num_images) int64 positions into the ground truth's ``images`` list, each
    row drawn uniformly with replacement by ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_images, size=(num_samples, num_images), dtype=np.int64)


def _slot_ids(ids: np.ndarray, index: np.ndarray, start: int) -> np.ndarray:
    """(M,) the id of each resampled copy: the original id for an item's first copy (so the
    identity resample is the dataset itself), ``start + slot`` for the others (unique, as
    ``start`` is above every original id)."""
    first = np.zeros(len(index), bool)
    first[np.unique(index, return_index=True)[1]] = True
    return np.where(first, ids[index], start + np.arange(len(index), dtype=np.int64))


def _gather_groups(group: np.ndarray, num_groups: int, index: np.ndarray):
    """Rows of the items of group ``index[j]`` for every slot j, concatenated slot by slot (an
    item's order within its group kept), without a Python loop.

    Args:
        group: (K,) group (image position) of each item.
        index: (M,) groups to gather, with repeats.
    Returns:
        rows: (L,) item positions, L = sum of the gathered groups' sizes.
        slot: (L,) the slot j each row was gathered for.
    """
    order = np.argsort(group, kind="stable")
    counts = np.bincount(group, minlength=num_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    lengths = counts[index]
    out_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    # position in ``order`` of output row r = starts[group of its slot] + (r - its slot's start)
    within = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(out_starts, lengths)
    rows = order[np.repeat(starts[index], lengths) + within]
    return rows, np.repeat(np.arange(len(index), dtype=np.int64), lengths)


def resample_dataset(
    lvis_gt: dict, dets: Detections, index: np.ndarray
) -> Tuple[dict, Detections]:
    """One bootstrap resample, materialised.

    Args:
        lvis_gt: LVIS-format ground truth (not modified).
        dets: detections on ``lvis_gt``'s images (every ``image_id`` one of its images).
        index: (M,) positions into ``lvis_gt["images"]``, with repeats (a row of
            :func:`draw_resamples`).
    Returns:
        gt: the M images in ``index`` order, each a copy of its image dict (its
            ``neg_category_ids`` / ``not_exhaustive_category_ids`` carried over) with a new
            ``id`` where it is a second or later copy; the annotations of each copy, re-pointed
            to its id (ids likewise kept for first copies, new for the others); the categories.
        dets: the detections of each copy, slot by slot, with ``image_id`` re-pointed: (L,)
            rows, L = sum over slots of that image's detection count.
    """
    index = np.asarray(index, np.int64)
    images, anns = lvis_gt["images"], lvis_gt["annotations"]
    img_ids = np.fromiter((img["id"] for img in images), np.int64, len(images))
    new_img_ids = _slot_ids(img_ids, index, int(img_ids.max(initial=0)) + 1)
    # Image position of every detection / annotation (ids -> positions by one sorted lookup).
    by_id = np.argsort(img_ids, kind="stable")
    det_pos = by_id[np.searchsorted(img_ids, dets.image_id, sorter=by_id)]
    rows, slot = _gather_groups(det_pos, len(images), index)
    out_dets = dets.select(rows)
    if out_dets is dets:  # select returns itself when nothing moves: never re-point in place
        out_dets = dets.select(np.arange(len(dets)))
    out_dets.image_id = new_img_ids[slot]
    ann_img = np.fromiter((a["image_id"] for a in anns), np.int64, len(anns))
    ann_ids = np.fromiter((a["id"] for a in anns), np.int64, len(anns))
    ann_rows, ann_slot = _gather_groups(
        by_id[np.searchsorted(img_ids, ann_img, sorter=by_id)], len(images), index
    )
    new_ann_ids = _slot_ids(ann_ids, ann_rows, int(ann_ids.max(initial=0)) + 1)
    gt = dict(
        lvis_gt,
        images=[dict(images[p], id=i) for p, i in zip(index.tolist(), new_img_ids.tolist())],
        annotations=[
            dict(anns[r], id=a, image_id=i)
            for r, a, i in zip(
                ann_rows.tolist(), new_ann_ids.tolist(), new_img_ids[ann_slot].tolist()
            )
        ],
    )
    return gt, out_dets


def summarize_samples(values: Dict[str, float], samples: Dict[str, List[float]]) -> dict:
    """{metric: {"value", "mean", "std", "num_nan"}}: the full-data value, and the mean and
    sample std (ddof 1) of the resamples' values, nan ones (no ground truth in that group in a
    resample) left out and counted. mean / std are nan with fewer than 2 finite values."""
    out = {}
    for key, value in values.items():
        s = np.asarray(samples[key], np.float64)
        finite = s[np.isfinite(s)]
        out[key] = {
            "value": float(value),
            "mean": float(finite.mean()) if len(finite) >= 2 else math.nan,
            "std": float(finite.std(ddof=1)) if len(finite) >= 2 else math.nan,
            "num_nan": int(len(s) - len(finite)),
        }
    return out


def bootstrap_lvis_metrics(
    lvis_gt: dict,
    dets: Detections,
    iou_type: str,
    num_samples: int,
    seed: int = 0,
    max_dets: int = 300,
    dets_per_category: int = 0,
    log_every: int = 10,
) -> dict:
    """The image bootstrap of :func:`~.lvis_eval.evaluate_lvis`'s metrics.

    Args:
        lvis_gt, dets, iou_type, max_dets, dets_per_category: as :func:`evaluate_lvis`.
        num_samples: N >= 2 resamples.
        seed: of the numpy Generator drawing the resamples (:func:`draw_resamples`).
        log_every: log "resample k/N" with an ETA every this many resamples.
    Returns:
        {"num_samples", "seed", "iou_type", "num_images",
         "metrics": {metric: {"value", "mean", "std", "num_nan"}} (:func:`summarize_samples`),
         "samples": {metric: [N values]} (nan where the resample has no ground truth there)}.
    """
    if num_samples < 2:
        raise ValueError(f"bootstrap: num_samples must be >= 2 for a std, got {num_samples}")
    check_detections(lvis_gt, dets)  # an unknown image id would otherwise fail in the lookup
    values, _ = evaluate_lvis(lvis_gt, dets, iou_type, max_dets, dets_per_category)
    draws = draw_resamples(len(lvis_gt["images"]), num_samples, seed)
    samples = {k: [] for k in values}
    start = time.perf_counter()
    for k, index in enumerate(draws, start=1):
        gt_k, dets_k = resample_dataset(lvis_gt, dets, index)
        metrics, _ = evaluate_lvis(gt_k, dets_k, iou_type, max_dets, dets_per_category)
        for key in samples:
            samples[key].append(float(metrics[key]))
        if log_every and (k % log_every == 0 or k == num_samples):
            elapsed = time.perf_counter() - start
            logger.info(
                f"bootstrap {iou_type}: resample {k}/{num_samples}, "
                f"{elapsed:.0f} s, ETA {elapsed / k * (num_samples - k):.0f} s"
            )
    return {
        "num_samples": num_samples,
        "seed": seed,
        "iou_type": iou_type,
        "num_images": len(lvis_gt["images"]),
        "metrics": summarize_samples(values, samples),
        "samples": samples,
    }
