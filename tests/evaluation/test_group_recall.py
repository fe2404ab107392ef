"""recall_per_group and top_ranked_per_group on cases counted by hand: the per-image cap applied
first, a category mismatch and a low overlap not counted, area-0 annotations left out, each class's
top-n split into own class / other class / background, boxes and masks alike; and
tools/evaluate.py --group-recall."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from pycocotools import mask as mask_util

from longtail_d2.evaluation.detections import Detections
from longtail_d2.evaluation.group_recall import recall_per_group, top_ranked_per_group
from tests.conftest import REPO

H = W = 100
# (image, category, box XYWH); categories 1 rare, 2 common, 3 frequent.
GT = [
    (1, 1, [0, 0, 10, 10]),
    (1, 3, [50, 50, 20, 20]),
    (2, 1, [10, 10, 10, 10]),
    (2, 2, [30, 30, 10, 10]),
]
# (image, category, box, score). Image 1 at a cap of 3 keeps 0.9, 0.5, 0.4; image 2 keeps 0.8,
# 0.7, 0.6 and loses its only rare detection (0.1).
DETS = [
    (1, 1, [0, 0, 10, 20], 0.9),  # IoU 0.5 with the rare instance: found
    (1, 1, [0, 0, 10, 10], 0.2),  # exact, but past the cap
    (1, 3, [60, 60, 20, 20], 0.5),  # IoU 100 / 700 with the frequent instance: not found
    (1, 2, [50, 50, 20, 20], 0.4),  # exact box, wrong category: not found
    (2, 2, [30, 30, 10, 10], 0.8),  # found
    (2, 3, [0, 0, 5, 5], 0.7),
    (2, 2, [80, 80, 5, 5], 0.6),
    (2, 1, [10, 10, 10, 10], 0.1),  # exact, found only with a cap of 4 or more
]


def _rle(box):
    m = np.zeros((H, W), np.uint8, order="F")
    x, y, w, h = box
    m[y : y + h, x : x + w] = 1
    rle = mask_util.encode(m)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _case(dets=DETS):
    gt = {
        "images": [
            {"id": i, "height": H, "width": W, "neg_category_ids": [],
             "not_exhaustive_category_ids": []}
            for i in (1, 2)
        ],
        "categories": [
            {"id": c, "name": f"c{c}", "frequency": f} for c, f in zip((1, 2, 3), "rcf")
        ],
        "annotations": [
            {"id": k + 1, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3],
             "segmentation": _rle(b)}
            for k, (i, c, b) in enumerate(GT)
        ],
    }
    # Area 0: left out, as lvis-api does (otherwise frequent would have 2 instances).
    gt["annotations"].append(
        {"id": 9, "image_id": 2, "category_id": 3, "bbox": [5, 5, 0, 0], "area": 0,
         "segmentation": _rle([5, 5, 0, 0])}
    )
    results = [
        {"image_id": i, "category_id": c, "bbox": b, "score": s, "segmentation": _rle(b)}
        for i, c, b, s in dets
    ]
    return gt, results


def _check(out, rare_found, rare_dets, rare_median):
    assert out["r"]["instances"] == 2 and out["r"]["detections"] == rare_dets
    assert out["r"]["found"] == rare_found and out["r"]["recall"] == rare_found / 2
    assert out["r"]["median_score"] == pytest.approx(rare_median)
    assert (out["c"]["instances"], out["c"]["detections"], out["c"]["found"]) == (1, 3, 1)
    assert out["c"]["recall"] == 1.0 and out["c"]["median_score"] == pytest.approx(0.8)
    assert (out["f"]["instances"], out["f"]["detections"], out["f"]["found"]) == (1, 2, 0)
    assert out["f"]["recall"] == 0.0 and math.isnan(out["f"]["median_score"])


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_counts_by_hand(iou_type):
    gt, results = _case()
    dets = Detections.from_results(results)
    _check(recall_per_group(gt, dets, iou_type, max_dets=3), 1, 1, 0.9)
    # A cap of 4 keeps image 2's rare detection: both rare instances found, scores 0.9 and 0.1.
    out = recall_per_group(gt, dets, iou_type, max_dets=4)
    assert (out["r"]["found"], out["r"]["detections"]) == (2, 3)
    assert out["r"]["median_score"] == pytest.approx(0.5)
    # A stricter overlap loses the rare instance found at IoU 0.5 exactly.
    out = recall_per_group(gt, dets, iou_type, iou_thr=0.6, max_dets=3)
    assert out["r"]["found"] == 0 and out["c"]["found"] == 1


# Each class's top-n (n: its instances; frequent has 1, its area-0 annotation left out).
TOP_DETS = [
    (1, 2, [50, 50, 20, 20], 0.95),  # common's best: on the frequent instance
    (2, 2, [30, 30, 10, 10], 0.3),  # on its own instance, but second (n = 1): not looked at
    (1, 1, [0, 0, 10, 10], 0.9),  # rare's best: its own instance
    (2, 1, [60, 60, 10, 10], 0.88),  # rare's second: background
    (1, 1, [0, 0, 10, 10], 0.85),  # rare's third: not looked at (n = 2)
    (2, 3, [30, 30, 10, 10], 0.6),  # frequent's best: on the common instance
]


def _top(report, group):
    r = report[group]
    return (r["instances"], r["ranked"], r["own"], r["other"], r["background"],
            tuple(r["other_by_group"][h] for h in "rcf"))


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_top_ranked_by_hand(iou_type):
    gt, results = _case(TOP_DETS)
    out = top_ranked_per_group(gt, Detections.from_results(results), iou_type)
    assert _top(out, "r") == (2, 2, 1, 0, 1, (0, 0, 0))
    assert _top(out, "c") == (1, 1, 0, 1, 0, (0, 0, 1))
    assert _top(out, "f") == (1, 1, 0, 1, 0, (0, 1, 0))
    # The background detection ranked below the duplicate: a duplicate counts as its own class.
    lower = [d if d[3] != 0.88 else d[:3] + (0.8,) for d in TOP_DETS]
    gt, results = _case(lower)
    out = top_ranked_per_group(gt, Detections.from_results(results), iou_type)
    assert _top(out, "r") == (2, 2, 2, 0, 0, (0, 0, 0))
    # The per-image cap first: at 1 per image, image 1 keeps common's 0.95 and image 2 rare's
    # 0.8 (background); frequent keeps nothing.
    out = top_ranked_per_group(gt, Detections.from_results(results), iou_type, max_dets=1)
    assert _top(out, "r") == (2, 1, 0, 0, 1, (0, 0, 0))
    assert _top(out, "c") == (1, 1, 0, 1, 0, (0, 0, 1))
    assert _top(out, "f") == (1, 0, 0, 0, 0, (0, 0, 0))


def test_evaluate_tool_reports_group_recall(tmp_path):
    gt, results = _case()
    gt_file, res_file = tmp_path / "gt.json", tmp_path / "results.json"
    gt_file.write_text(json.dumps(gt))
    res_file.write_text(json.dumps(results))
    out = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "evaluate.py"), str(res_file),
         "--gt", str(gt_file), "--protocol", "lvis", "--max-dets-per-image", "3",
         "--group-recall", "--output", str(tmp_path / "rep")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    with open(tmp_path / "rep" / "group_recall.json") as f:
        report = json.load(f)
    for task in ("bbox", "segm"):
        assert report[task]["f"]["median_score"] is None  # nan, as strict JSON writes it
        report[task]["f"]["median_score"] = math.nan
        _check(report[task], 1, 1, 0.9)
        # Top-n at 3 per image: rare's one kept detection on its instance, common's best on its
        # instance, frequent's best (image 2, 0.7) on background.
        top = {g: report[task][g]["top_ranked"] for g in "rcf"}
        assert _top(top, "r") == (2, 1, 1, 0, 0, (0, 0, 0))
        assert _top(top, "c") == (1, 1, 1, 0, 0, (0, 0, 0))
        assert _top(top, "f") == (1, 1, 0, 0, 1, (0, 0, 0))
    assert "recall@0.5" in out.stdout + out.stderr
    assert "top-n detections" in out.stdout + out.stderr


def test_recall_iou_out_of_range_is_one_line(tmp_path):
    gt, results = _case()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(results))
    out = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "evaluate.py"),
         str(tmp_path / "results.json"), "--gt", str(tmp_path / "gt.json"), "--group-recall",
         "--recall-iou", "0",
         "--output", str(tmp_path / "rep")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert out.returncode == 1
    assert out.stderr.splitlines()[-1] == "error: --recall-iou 0.0: an IoU in (0, 1]"
    assert not (tmp_path / "rep").exists()
