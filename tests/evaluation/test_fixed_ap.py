"""AP-fixed and AP-pool (Dave et al. 2021) on a case worked by hand, and their limits."""

import numpy as np
import pytest

from longtail_d2.evaluation import evaluate_ap_pool, evaluate_lvis
from tests.evaluation.test_lvis_eval import generated_case

FAR = [40.0, 40.0, 10.0, 10.0]  # overlaps no ground truth


def _hand_case():
    """Two images, category 1 (frequent) and 2 (rare); every box is exact or far (IoU 1 or 0,
    so all ten IoU thresholds agree).
    image 1: GT A1 (cat 1), GT B1 (cat 2).   image 2: GT A2 (cat 1); cat 2 a verified negative.
    detections: d1 img1 cat1 on A1 0.9 | d2 img2 cat1 far 0.8 | d3 img2 cat1 on A2 0.3
                d4 img1 cat2 on B1 0.5 | d5 img2 cat2 far 0.6"""
    a1, b1, a2 = [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]
    img = {"height": 64, "width": 64, "not_exhaustive_category_ids": []}
    gt = {
        "images": [dict(img, id=1, neg_category_ids=[]), dict(img, id=2, neg_category_ids=[2])],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": a1, "area": 100.0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": b1, "area": 100.0},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": a2, "area": 100.0},
        ],
        "categories": [
            {"id": 1, "name": "A", "frequency": "f"},
            {"id": 2, "name": "B", "frequency": "r"},
        ],
    }

    def det(image_id, cat, box, score):
        return {"image_id": image_id, "category_id": cat, "bbox": box, "score": score}

    dets = [det(1, 1, a1, 0.9), det(2, 1, FAR, 0.8), det(2, 1, a2, 0.3)]
    dets += [det(1, 2, b1, 0.5), det(2, 2, FAR, 0.6)]
    return gt, dets


def test_ap_fixed_by_hand():
    gt, dets = _hand_case()
    # Budget K = 2 per category keeps d1, d2 (cat 1) and d5, d4 (cat 2); d3 is cut.
    # cat 1: TP, FP; 2 GT -> precision 1 up to recall 0.5, nothing beyond: 51 of the 101
    #   recall points (0.00 ... 0.50) at 1 -> AP 51/101.
    # cat 2: FP, TP; 1 GT -> interpolated precision 0.5 at every recall point -> AP 0.5.
    metrics, per_cat = evaluate_lvis(gt, dets, "bbox", dets_per_category=2)
    assert per_cat[1] == pytest.approx(100 * 51 / 101)
    assert per_cat[2] == pytest.approx(50.0)
    assert metrics["AP"] == pytest.approx(100 * (51 / 101 + 0.5) / 2)
    assert metrics["APf"] == pytest.approx(100 * 51 / 101) and metrics["APr"] == pytest.approx(50)
    # With the usual per-image cap instead, d3 stays: cat 1 reaches recall 1 at precision 2/3:
    # (51 x 1 + 50 x 2/3) / 101.
    assert evaluate_lvis(gt, dets, "bbox")[1][1] == pytest.approx(100 * (51 + 50 * 2 / 3) / 101)


def test_ap_fixed_has_no_per_image_cap():
    gt, dets = _hand_case()
    # A cap of 1 per image keeps only d1 (image 1) and d2 (image 2): cat 2 has no TP, AP 0.
    assert evaluate_lvis(gt, dets, "bbox", max_dets=1)[1][2] == 0.0
    # AP-fixed ignores the per-image cap: cat 2 keeps d5, d4 as above.
    fixed = evaluate_lvis(gt, dets, "bbox", max_dets=1, dets_per_category=2)[1]
    assert fixed[2] == pytest.approx(50)


def test_ap_pool_by_hand():
    gt, dets = _hand_case()
    # Pool "all", K = 2 (d1, d2, d5, d4), ranked together: TP .9, FP .8, FP .6, TP .5; 3 GT.
    # recall 1/3 1/3 1/3 2/3, precision 1 .5 1/3 .5 -> interpolated 1 .5 .5 .5:
    # recall points 0.00-0.33 (34) at 1, 0.34-0.66 (33) at 0.5, the rest 0 -> 50.5 / 101 = 0.5.
    # Pool "f" = cat 1 alone (51/101); pool "r" = cat 2 alone (0.5).
    pool = evaluate_ap_pool(gt, dets, "bbox", dets_per_category=2)
    assert pool["AP"] == pytest.approx(100 * 50.5 / 101)
    assert pool["APf"] == pytest.approx(100 * 51 / 101)
    assert pool["APr"] == pytest.approx(50.0)
    assert np.isnan(pool["APc"])  # no common category
    assert pool["AP50"] == pytest.approx(pool["AP"])  # IoU is 1 or 0


def test_ap_pool_of_one_category_is_its_ap_fixed():
    """A pool with one category ranks that category's detections alone: its AP-fixed."""
    gt, dets = generated_case(num_images=30)
    for c in gt["categories"]:  # category 1 alone is rare, 2 alone common
        c["frequency"] = {1: "r", 2: "c"}.get(c["id"], "f")
    for iou_type in ("bbox", "segm"):
        _, per_cat = evaluate_lvis(gt, dets, iou_type, dets_per_category=10_000)
        pool = evaluate_ap_pool(gt, dets, iou_type, dets_per_category=10_000)
        assert 0 < per_cat[1] < 100 and 0 < per_cat[2] < 100
        for cat, group in ((1, "r"), (2, "c")):
            assert pool[f"AP{group}"] == pytest.approx(per_cat[cat], abs=1e-9), (iou_type, cat)


def test_ap_fixed_equals_lvis_ap_when_nothing_is_cut():
    gt, dets = generated_case()
    for iou_type in ("bbox", "segm"):
        fixed, _ = evaluate_lvis(gt, dets, iou_type, dets_per_category=len(dets))
        usual, _ = evaluate_lvis(gt, dets, iou_type, max_dets=len(dets))
        for key, value in usual.items():
            assert fixed[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key


def test_ap_pool_leaves_out_area_zero_as_lvis_api():
    """lvis-api evaluates annotations and detections of area > 0 only: a zero-width box ranked
    first, or an annotation of area 0, changes neither AP-pool nor AP-fixed."""
    gt, dets = _hand_case()
    pool = evaluate_ap_pool(gt, dets, "bbox", dets_per_category=2)
    fixed = evaluate_lvis(gt, dets, "bbox", dets_per_category=3)[0]
    dets = dets + [{"image_id": 1, "category_id": 1, "bbox": [5.0, 5.0, 0.0, 5.0], "score": 0.95}]
    gt["annotations"].append(
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [30.0, 30.0, 0.0, 0.0], "area": 0.0}
    )
    pool_after = evaluate_ap_pool(gt, dets, "bbox", dets_per_category=3)
    assert pool_after == pytest.approx(pool, nan_ok=True)
    assert evaluate_lvis(gt, dets, "bbox", dets_per_category=4)[0] == pytest.approx(
        fixed, nan_ok=True
    )
