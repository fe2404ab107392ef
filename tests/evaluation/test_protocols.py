"""The COCO protocol against pycocotools, the choice of protocol, exact category chunking, and
tools/evaluate.py on files."""

import copy
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from longtail_d2.evaluation import chunked_eval, evaluate_coco, evaluate_lvis
from longtail_d2.evaluation.protocols import EvalGroundTruth, choose_protocols
from tests.conftest import REPO, write_json
from tests.evaluation.test_lvis_eval import _square_rle, generated_case


def coco_case():
    """generated_case as an exhaustively annotated COCO file, with crowd regions: no neg /
    not-exhaustive lists, a crowd box in every 4th image."""
    gt, dets = generated_case(num_images=40)
    for img in gt["images"]:
        del img["neg_category_ids"], img["not_exhaustive_category_ids"]
        if img["id"] % 4 == 0:
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": img["id"],
                    "category_id": 1 + img["id"] % 12,
                    "bbox": [30.0, 30.0, 30.0, 30.0],
                    "area": 900.0,
                    "segmentation": _square_rle(30, 30, 30, 30),
                    "iscrowd": 1,
                }
            )
    for a in gt["annotations"]:
        a.setdefault("iscrowd", 0)
    return gt, dets


def pycocotools_eval(gt, dets, iou_type):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    api = COCO()
    api.dataset = copy.deepcopy(gt)
    api.createIndex()
    field = "segmentation" if iou_type == "bbox" else "bbox"
    res = api.loadRes([{k: v for k, v in d.items() if k != field} for d in copy.deepcopy(dets)])
    ev = COCOeval(api, res, iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_coco_protocol_equals_pycocotools(iou_type):
    gt, dets = coco_case()
    frequency = {c["id"]: c["frequency"] for c in gt["categories"]}
    ours, per_cat = evaluate_coco(gt, dets, iou_type, frequency)
    ref = pycocotools_eval(gt, dets, iou_type)
    for k, key in enumerate(("AP", "AP50", "AP75", "APs", "APm", "APl")):
        if ref.stats[k] < 0:
            assert math.isnan(ours[key]), key
        else:
            assert ours[key] == pytest.approx(100 * ref.stats[k], abs=1e-6), key
    # Per-category AP (maxDets 100, all areas) from pycocotools' precision array; r/c/f = the
    # mean over the group's categories with ground truth.
    precision = ref.eval["precision"][:, :, :, 0, -1]
    ref_cat = {}
    for k, cat in enumerate(ref.params.catIds):
        p = precision[:, :, k]
        ref_cat[cat] = 100 * p[p > -1].mean() if (p > -1).any() else float("nan")
    for cat, value in ref_cat.items():
        assert per_cat[cat] == pytest.approx(value, abs=1e-6, nan_ok=True)
    for g in "rcf":
        values = [v for c, v in ref_cat.items() if frequency[c] == g and not math.isnan(v)]
        assert ours[f"AP{g}"] == pytest.approx(np.mean(values), abs=1e-6)
    # Crowd regions matter: without them unmatched detections there would count as FPs.
    no_crowd = dict(gt, annotations=[a for a in gt["annotations"] if not a["iscrowd"]])
    assert evaluate_coco(no_crowd, dets, iou_type, frequency)[0]["AP"] != ours["AP"]


def test_category_groups_give_the_numbers_of_one_run(monkeypatch):
    gt, dets = generated_case()
    assert len(dets) > 255  # one group with more masks than pycocotools' area() could take
    monkeypatch.setattr(chunked_eval, "MAX_PAIRS_PER_GROUP", 10**9)
    monkeypatch.setattr(chunked_eval, "MAX_DETS_PER_GROUP", 10**9)
    whole = {t: evaluate_lvis(gt, dets, t) for t in ("bbox", "segm")}
    monkeypatch.setattr(chunked_eval, "MAX_DETS_PER_GROUP", 7)  # ~a category per group
    for t, (metrics, per_cat) in whole.items():
        grouped, grouped_cat = evaluate_lvis(gt, dets, t)
        assert grouped == pytest.approx(metrics, abs=0, nan_ok=True)
        assert grouped_cat == pytest.approx(per_cat, abs=0, nan_ok=True)


def test_protocol_follows_the_federated_lists_not_frequency(tmp_path):
    gt, _ = coco_case()
    # A COCO file whose categories carry a frequency field is still exhaustive: COCO protocol.
    assert all("frequency" in c for c in gt["categories"])
    coco = EvalGroundTruth.from_json(write_json(tmp_path / "coco.json", gt))
    protocols, reason = choose_protocols("", coco)
    assert protocols == ["coco"] and "no neg_category_ids" in reason
    lvis_gt, _ = generated_case()
    lvis = EvalGroundTruth.from_json(write_json(tmp_path / "lvis.json", lvis_gt))
    assert choose_protocols("", lvis)[0] == ["lvis"]
    assert choose_protocols("both", coco) == (["lvis", "coco"], "TEST.EVALUATOR is 'both'")
    with pytest.raises(ValueError, match="TEST.EVALUATOR"):
        choose_protocols("voc", coco)


def _evaluate_tool(*args):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "evaluate.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )


def test_evaluate_tool_scores_a_results_file_to_known_values(tmp_path):
    """One GT box of category 1 and a verified negative category 2 (as in test_lvis_eval):
    a perfect detection (0.9) and a higher-scoring miss (0.95) -> precision 0.5 at every recall
    point: LVIS AP 50 (and COCO AP 50: the same single FP); AP-fixed is the same, no cap binds."""
    from tests.evaluation.test_lvis_eval import _one_image_case

    gt, tp = _one_image_case()
    fp = dict(tp, bbox=[40, 40, 10, 10], score=0.95)
    gt_file = write_json(tmp_path / "gt.json", gt)
    results = write_json(tmp_path / "results.json", [tp, fp])
    out = tmp_path / "out"
    proc = _evaluate_tool(
        results, "--gt", gt_file, "--protocol", "both", "--dets-per-category", "10",
        "--output", str(out),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("bbox/AP", "bbox_coco/AP", "bbox_fixed/AP", "bbox_pool/AP", "bbox/APf"):
        assert metrics[key] == pytest.approx(50.0), key
    assert metrics["bbox/APr"] is None  # no rare category: strict JSON null
    assert "lvis and coco protocols" in proc.stdout + proc.stderr
    # An image id the ground truth lacks: one line naming it, nothing written.
    bad = write_json(tmp_path / "bad.json", [dict(tp, image_id=7)])
    proc = _evaluate_tool(bad, "--gt", gt_file, "--output", str(tmp_path / "bad_out"))
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: results: image_id 7")
    assert not (tmp_path / "bad_out").exists()
