"""The image bootstrap of the LVIS metrics: one resample against lvis-api on a duplicated dataset
written out by hand, the identity resample, the std over resamples, and tools/evaluate.py's
--bootstrap."""

import copy
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from longtail_d2.evaluation import bootstrap
from longtail_d2.evaluation.bootstrap import (
    bootstrap_lvis_metrics,
    draw_resamples,
    resample_dataset,
)
from longtail_d2.evaluation.detections import Detections
from longtail_d2.evaluation.lvis_eval import LVIS_METRICS, evaluate_lvis
from tests.conftest import REPO
from tests.evaluation.test_lvis_eval import generated_case, lvis_api_results

EVALUATE = os.path.join(REPO, "tools", "evaluate.py")
# 60 images: image 0 three times, 5 and 7 twice, 1, 2, 4, 6, 8, 9 left out, the rest once.
INDEX = np.array([0, 0, 5, 7, 0, 7, 3] + list(range(10, 60)) + [5, 11, 12])


@pytest.fixture(scope="module")
def case():
    gt, dets = generated_case()
    return gt, dets, Detections.from_results(dets)


def _same(a, b):
    """Metric dicts equal, nan where the other is nan."""
    assert set(a) == set(b)
    for k in a:
        assert (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k], (k, a[k], b[k])


def _duplicated_by_hand(gt, dets, index):
    """The resampled dataset written out with plain dicts: slot j is image 1000 + j, a copy of
    image ``index[j]`` with its lists, annotations (numbered afresh) and detections."""
    images, anns, out_dets = [], [], []
    for j, pos in enumerate(index.tolist()):
        src = gt["images"][pos]
        new_id = 1000 + j
        images.append(dict(copy.deepcopy(src), id=new_id))
        for a in gt["annotations"]:
            if a["image_id"] == src["id"]:
                anns.append(dict(copy.deepcopy(a), id=len(anns) + 1, image_id=new_id))
        mine = [d for d in dets if d["image_id"] == src["id"]]
        out_dets += [dict(copy.deepcopy(d), image_id=new_id) for d in mine]
    return dict(gt, images=images, annotations=anns), out_dets


@pytest.mark.parametrize("iou_type,max_dets", [("bbox", 300), ("segm", 300), ("bbox", 3)])
def test_one_resample_equals_lvis_api_on_the_duplicated_dataset(case, iou_type, max_dets, tmp_path):
    """Independent route: lvis-api's LVISEval on the duplicated dataset materialised as JSON.
    max_dets 3 checks that each copy of an image is capped on its own."""
    gt, dets, arrays = case
    by_hand_gt, by_hand_dets = _duplicated_by_hand(gt, dets, INDEX)
    ref = lvis_api_results(by_hand_gt, by_hand_dets, iou_type, max_dets, tmp_path)
    gt_k, dets_k = resample_dataset(gt, arrays, INDEX)
    ours, _ = evaluate_lvis(gt_k, dets_k, iou_type, max_dets=max_dets)
    full, _ = evaluate_lvis(gt, arrays, iou_type, max_dets=max_dets)
    assert ours["AP"] != pytest.approx(full["AP"], abs=0.1)  # the resample is a different set
    for key in LVIS_METRICS:
        expected = ref[key] * 100
        if expected < 0:  # lvis-api's -1: no ground truth there
            assert math.isnan(ours[key]), key
        else:
            assert ours[key] == pytest.approx(expected, abs=1e-4), key


def test_resample_structure(case):
    """Ids are unique, first copies keep theirs, every copy carries its image's annotations,
    lists and detections (same rows, in order)."""
    gt, _, arrays = case
    before = arrays.image_id.copy()
    gt_k, dets_k = resample_dataset(gt, arrays, INDEX)
    ids = [img["id"] for img in gt_k["images"]]
    assert len(ids) == len(INDEX) == len(set(ids))
    assert ids[:2] == [gt["images"][0]["id"], 62] and ids[4] == 65  # later copies: 61 + slot
    assert len({a["id"] for a in gt_k["annotations"]}) == len(gt_k["annotations"])
    for img, pos in zip(gt_k["images"], INDEX.tolist()):
        src = gt["images"][pos]
        assert img["neg_category_ids"] == src["neg_category_ids"]
        assert img["not_exhaustive_category_ids"] == src["not_exhaustive_category_ids"]
        mine = [a["bbox"] for a in gt_k["annotations"] if a["image_id"] == img["id"]]
        assert mine == [a["bbox"] for a in gt["annotations"] if a["image_id"] == src["id"]]
        rows = np.flatnonzero(dets_k.image_id == img["id"])
        orig = np.flatnonzero(arrays.image_id == src["id"])
        np.testing.assert_array_equal(dets_k.score[rows], arrays.score[orig])
        assert dets_k.select(rows).rles() == arrays.select(orig).rles()
    assert np.array_equal(arrays.image_id, before)  # the input is left as it was


def test_identity_resample_gives_the_full_data_metrics(case):
    gt, _, arrays = case
    gt_k, dets_k = resample_dataset(gt, arrays, np.arange(len(gt["images"])))
    assert [i["id"] for i in gt_k["images"]] == [i["id"] for i in gt["images"]]
    for iou_type in ("bbox", "segm"):
        _same(evaluate_lvis(gt_k, dets_k, iou_type)[0], evaluate_lvis(gt, arrays, iou_type)[0])


def test_std_over_resamples_is_numpys(case):
    """N = 3 recomputed resample by resample, and the draws fixed by the seed."""
    gt, _, arrays = case
    out = bootstrap_lvis_metrics(gt, arrays, "bbox", 3, seed=7)
    draws = np.random.default_rng(7).integers(0, len(gt["images"]), (3, len(gt["images"])))
    per = [evaluate_lvis(*resample_dataset(gt, arrays, d), "bbox")[0] for d in draws]
    full = evaluate_lvis(gt, arrays, "bbox")[0]
    for key in ("AP", "APr", "APf"):
        values = np.array([p[key] for p in per])
        assert out["samples"][key] == values.tolist()
        assert out["metrics"][key]["std"] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
        assert out["metrics"][key]["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert out["metrics"][key]["value"] == full[key] and out["metrics"][key]["num_nan"] == 0
    assert out["metrics"]["APl"]["num_nan"] == 3 and math.isnan(out["metrics"]["APl"]["std"])
    assert np.array_equal(draw_resamples(len(gt["images"]), 3, 7), draws)


def test_nan_resamples_are_left_out_and_counted(case, monkeypatch):
    """A stub scorer: APr is nan in two resamples (no rare image drawn)."""
    gt, _, arrays = case
    full = {"AP": 40.0, "APr": 10.0}
    per = [
        {"AP": 41.0, "APr": 12.0},
        {"AP": 38.0, "APr": math.nan},
        {"AP": 43.0, "APr": 9.0},
        {"AP": 39.5, "APr": math.nan},
        {"AP": 40.5, "APr": 14.0},
    ]
    calls = iter([full] + per)
    monkeypatch.setattr(bootstrap, "evaluate_lvis", lambda *a, **k: (next(calls), {}))
    out = bootstrap_lvis_metrics(gt, arrays, "bbox", 5, seed=0)
    ap, apr = out["metrics"]["AP"], out["metrics"]["APr"]
    assert ap["value"] == 40.0 and ap["num_nan"] == 0
    assert ap["std"] == pytest.approx(np.std([41, 38, 43, 39.5, 40.5], ddof=1))
    assert apr["value"] == 10.0 and apr["num_nan"] == 2
    assert apr["std"] == pytest.approx(np.std([12.0, 9.0, 14.0], ddof=1))
    assert apr["mean"] == pytest.approx(35.0 / 3)
    with pytest.raises(ValueError, match="num_samples"):
        bootstrap_lvis_metrics(gt, arrays, "bbox", 1)


def _write_case(tmp_path, gt, dets):
    gt_file, results = tmp_path / "gt.json", tmp_path / "results.json"
    gt_file.write_text(json.dumps(gt))
    results.write_text(json.dumps(dets))
    return str(gt_file), str(results)


def _evaluate(*args, timeout=120):
    """tools/evaluate.py as a subprocess (in process, its setup_logger would stop "longtail_d2"
    propagating to later tests' caplog)."""
    cmd = [sys.executable, EVALUATE, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_evaluate_tool_rejects_bad_bootstrap_before_writing(case, tmp_path):
    gt, dets, _ = case
    gt_file, results = _write_case(tmp_path, gt, dets)
    out = tmp_path / "out"
    proc = _evaluate(results, "--gt", gt_file, "--bootstrap", "1", "--output", out)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "--bootstrap" in lines[0]
    assert not out.exists()
    # The COCO protocol has no bootstrap: one line, nothing written.
    coco = ["--protocol", "coco", "--bootstrap", "3"]
    proc = _evaluate(results, "--gt", gt_file, *coco, "--output", out)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and lines[-1].startswith("error: --bootstrap"), proc.stderr
    assert "coco" in lines[-1]
    assert not out.exists()


def test_evaluate_tool_writes_bootstrap_json(case, tmp_path):
    gt, dets, _ = case
    gt_file, results = _write_case(tmp_path, gt, dets)
    out = tmp_path / "out"
    args = [results, "--gt", gt_file, "--bootstrap", "5", "--bootstrap-seed", "3"]
    proc = _evaluate(*args, "--output", out, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "bootstrap std (5 resamples)" in proc.stdout + proc.stderr
    with open(out / "bootstrap.json") as f:
        boot = json.load(f)
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    assert set(boot) == {"bbox", "segm"}  # masks in the results: both tasks
    for task, b in boot.items():
        assert (b["num_samples"], b["seed"], b["iou_type"], b["num_images"]) == (5, 3, task, 60)
        assert set(b["metrics"]) == set(b["samples"]) == set(LVIS_METRICS)
        for key, m in b["metrics"].items():
            assert set(m) == {"value", "mean", "std", "num_nan"}
            assert len(b["samples"][key]) == 5
            assert m["value"] == metrics[f"{task}/{key}"]  # null (nan) on both sides too
        assert b["metrics"]["AP"]["std"] > 0 and b["metrics"]["APl"]["num_nan"] == 5
