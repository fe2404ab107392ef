"""The evaluator against lvis-api's LVISEval (an independent implementation) and hand cases."""

import math

import numpy as np
import pytest
from pycocotools import mask as mask_util

from longtail_d2.evaluation import evaluate_lvis

SIZE = 64


def _square_rle(x, y, w, h):
    m = np.zeros((SIZE, SIZE), dtype=np.uint8, order="F")
    m[int(y) : int(y + h), int(x) : int(x + w)] = 1
    rle = mask_util.encode(m)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def generated_case(seed=0, num_images=60, num_cats=12):
    """GT with neg / not-exhaustive ids and all frequency groups, and noisy detections:
    true positives with jitter, duplicates, wrong classes on negative and on unlisted categories."""
    rng = np.random.default_rng(seed)
    freq = ["r", "c", "f"]
    cats = [{"id": c + 1, "name": f"c{c}", "frequency": freq[c % 3]} for c in range(num_cats)]
    images, anns, dets = [], [], []
    for i in range(1, num_images + 1):
        present = sorted(rng.choice(num_cats, size=rng.integers(1, 4), replace=False) + 1)
        absent = sorted(set(range(1, num_cats + 1)) - set(present))
        neg = sorted(rng.choice(absent, size=3, replace=False).tolist())
        not_exhaustive = [int(present[0])] if rng.random() < 0.3 else []
        images.append(
            {
                "id": i,
                "height": SIZE,
                "width": SIZE,
                "neg_category_ids": neg,
                "not_exhaustive_category_ids": not_exhaustive,
            }
        )
        for c in present:
            for _ in range(rng.integers(1, 3)):
                x, y = rng.integers(0, SIZE - 20, 2)
                w, h = rng.integers(4, 20, 2)  # small and medium areas
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": i,
                        "category_id": int(c),
                        "bbox": [float(x), float(y), float(w), float(h)],
                        "area": float(w * h),
                        "segmentation": _square_rle(x, y, w, h),
                    }
                )
                for _ in range(rng.integers(1, 3)):
                    jx, jy = rng.integers(-2, 3, 2)
                    box = [float(x + jx), float(y + jy), float(w), float(h)]
                    label = int(c) if rng.random() < 0.7 else int(rng.integers(1, num_cats + 1))
                    dets.append(
                        {
                            "image_id": i,
                            "category_id": label,
                            "bbox": box,
                            "score": float(rng.random()),
                            "segmentation": _square_rle(max(x + jx, 0), max(y + jy, 0), w, h),
                        }
                    )
        for _ in range(rng.integers(0, 4)):  # background false positives
            x, y = rng.integers(0, SIZE - 10, 2)
            dets.append(
                {
                    "image_id": i,
                    "category_id": int(rng.integers(1, num_cats + 1)),
                    "bbox": [float(x), float(y), 8.0, 8.0],
                    "score": float(rng.random()),
                    "segmentation": _square_rle(x, y, 8, 8),
                }
            )
    return {"images": images, "annotations": anns, "categories": cats}, dets


def lvis_api_results(gt, dets, iou_type, max_dets, tmp_path):
    """lvis-api 0.5.3's LVISEval, made to run on numpy >= 1.24 (np.float was removed)."""
    import copy
    import json

    lvis = pytest.importorskip("lvis")
    if not hasattr(np, "float"):
        np.float = float  # the shim: only inside this test
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps(gt))
    gt_api = lvis.LVIS(str(gt_file))
    dets = copy.deepcopy(dets)
    for d in dets:
        d.pop("segmentation" if iou_type == "bbox" else "bbox")
    results = lvis.LVISResults(gt_api, dets, max_dets=max_dets)
    ev = lvis.LVISEval(gt_api, results, iou_type)
    ev.run()
    return ev.results


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("max_dets", [300, 4])
def test_equals_lvis_api(iou_type, max_dets, tmp_path):
    gt, dets = generated_case()
    ours, _ = evaluate_lvis(gt, dets, iou_type, max_dets=max_dets)
    ref = lvis_api_results(gt, dets, iou_type, max_dets, tmp_path)
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"):
        expected = ref[key] * 100
        if expected < 0:  # lvis-api's -1: no ground truth in that group / area range
            assert math.isnan(ours[key]), key
        else:
            assert ours[key] == pytest.approx(expected, abs=1e-4), key


def _one_image_case():
    gt = {
        "images": [
            {
                "id": 1,
                "height": SIZE,
                "width": SIZE,
                "neg_category_ids": [2],
                "not_exhaustive_category_ids": [],
            }
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [10, 10, 20, 20],
                "area": 400.0,
                "segmentation": _square_rle(10, 10, 20, 20),
            }
        ],
        "categories": [{"id": c, "name": str(c), "frequency": "f"} for c in (1, 2, 3)],
    }
    tp = {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9}
    return gt, tp


def test_federated_protocol_by_hand():
    gt, tp = _one_image_case()
    # One perfect detection: AP of category 1 is 100; categories 2, 3 have no GT (nan).
    metrics, per_cat = evaluate_lvis(gt, [tp], "bbox")
    assert metrics["AP"] == pytest.approx(100.0)
    assert per_cat[1] == pytest.approx(100.0) and math.isnan(per_cat[2])
    # A higher-scoring miss of category 1 elsewhere halves precision at full recall:
    # precision is 0.5 at every recall point -> AP 50.
    fp = dict(tp, bbox=[40, 40, 10, 10], score=0.95)
    assert evaluate_lvis(gt, [tp, fp], "bbox")[0]["AP"] == pytest.approx(50.0)
    # The same miss is ignored when category 1 is not exhaustively annotated in the image.
    gt["images"][0]["not_exhaustive_category_ids"] = [1]
    assert evaluate_lvis(gt, [tp, fp], "bbox")[0]["AP"] == pytest.approx(100.0)
    # Detections of categories neither present nor negative are dropped, so cannot hurt;
    # category 2 is a verified negative: its detection is kept (it has no GT, so no AP either).
    other = [dict(tp, category_id=3, score=0.99), dict(tp, category_id=2, score=0.99)]
    assert evaluate_lvis(gt, [tp] + other, "bbox")[0]["AP"] == pytest.approx(100.0)


def test_top_300_per_image_across_categories():
    gt, tp = _one_image_case()
    # 3 higher-scoring detections of category 3 (not in the image's lists: dropped by the
    # federated filter) still take the cap first: with max_dets 3 the true positive is cut.
    crowd = [dict(tp, category_id=3, score=0.99) for _ in range(3)]
    assert evaluate_lvis(gt, [tp] + crowd, "bbox", max_dets=4)[0]["AP"] == pytest.approx(100.0)
    assert evaluate_lvis(gt, [tp] + crowd, "bbox", max_dets=3)[0]["AP"] == pytest.approx(0.0)


def test_no_detections():
    # One small (20 x 20 < 32 x 32) box of a frequent category: AP 0 where there is ground truth.
    gt, _ = _one_image_case()
    metrics, per_cat = evaluate_lvis(gt, [], "segm")
    assert metrics["AP"] == 0.0 and metrics["APs"] == 0.0 and metrics["APf"] == 0.0
    assert math.isnan(metrics["APm"]) and math.isnan(metrics["APr"])
    assert per_cat[1] == 0.0 and math.isnan(per_cat[2])


def _assert_equal_to_lvis_api(gt, dets, iou_type, max_dets, tmp_path):
    ours, _ = evaluate_lvis(gt, dets, iou_type, max_dets=max_dets)
    ref = lvis_api_results(gt, dets, iou_type, max_dets, tmp_path)
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"):
        expected = ref[key] * 100
        if expected < 0:
            assert math.isnan(ours[key]), key
        else:
            assert ours[key] == pytest.approx(expected, abs=1e-4), key
    return ours


def _empty(det):
    """The detection with an empty mask and a zero-width box (area 0 either way)."""
    x, y, _, h = det["bbox"]
    return dict(det, bbox=[x, y, 0.0, h], segmentation=_square_rle(x, y, 0, h))


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_area_zero_detection_is_dropped_after_the_cap(iou_type, tmp_path):
    """lvis-api evaluates only annotations and detections of area > 0 (LVIS.get_ann_ids): a
    detection with an empty mask / zero-width box is not a false positive (faster-coco-eval
    alone counts it in the "all" and "small" ranges), but it still takes its place in the
    per-image cap. Hand values: the small (20 x 20) GT is found by the 0.9 detection."""
    gt, tp = _one_image_case()
    tp = dict(tp, segmentation=_square_rle(10, 10, 20, 20))
    dets = [_empty(dict(tp, score=0.95)), tp]
    ours = _assert_equal_to_lvis_api(gt, dets, iou_type, 300, tmp_path)
    assert ours["AP"] == pytest.approx(100.0) and ours["APs"] == pytest.approx(100.0)
    ours = _assert_equal_to_lvis_api(gt, dets, iou_type, 1, tmp_path)  # the cap keeps the empty one
    assert ours["AP"] == 0.0


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_area_zero_cases_equal_lvis_api(iou_type, tmp_path):
    """The generated case plus high-scoring empty detections of present, negative and
    not-exhaustive categories, and ground truth of area 0 (lvis-api leaves it out: neither
    ground truth nor a reason to keep its category's detections in the image)."""
    gt, dets = generated_case(seed=3, num_images=30)
    extra = []
    for k, d in enumerate(dets[::3]):
        extra.append(_empty(dict(d, score=0.9 + 0.09 * (k % 7) / 7)))
    for a in gt["annotations"][::7]:
        a["area"] = 0.0
    ours = _assert_equal_to_lvis_api(gt, dets + extra, iou_type, 300, tmp_path)
    assert not math.isnan(ours["APs"])
