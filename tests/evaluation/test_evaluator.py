import json
import logging
import math
import os

import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances

from longtail_d2.data import register_longtail_dataset
from longtail_d2.evaluation import LongTailLVISEvaluator
from tests.conftest import write_json
from tests.data.small_dataset import coco_dict, write_images


def _perfect_outputs(dataset_dicts):
    """Model outputs equal to the ground truth (contiguous class ids, full-image masks)."""
    inputs, outputs = [], []
    for record in dataset_dicts:
        inst = Instances((record["height"], record["width"]))
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in record["annotations"])]
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.linspace(0.9, 0.5, len(boxes))
        inst.pred_classes = torch.tensor(
            [a["category_id"] for a in record["annotations"]], dtype=torch.int64
        )
        masks = torch.zeros(len(boxes), record["height"], record["width"], dtype=torch.bool)
        masks[:, 2:12, 2:12] = True  # SQUARE of small_dataset
        inst.pred_masks = masks
        inputs.append({"image_id": record["image_id"]})
        outputs.append({"instances": inst})
    return inputs, outputs


def test_perfect_predictions_and_written_files(tmp_path):
    from detectron2.data import DatasetCatalog

    images = write_images(tmp_path / "images")
    register_longtail_dataset("ev_small", write_json(tmp_path / "a.json", coco_dict()), images)
    out = str(tmp_path / "out")
    evaluator = LongTailLVISEvaluator("ev_small", out, distributed=False)
    evaluator.reset()
    evaluator.process(*_perfect_outputs(DatasetCatalog.get("ev_small")))
    results = evaluator.evaluate()
    # Detections equal the ground truth, so every category with GT has AP 100 for boxes;
    # the masks equal the squares up to pycocotools' polygon rasterisation.
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert results["bbox"]["APr"] == pytest.approx(100.0)
    assert math.isnan(results["bbox"]["APf"])  # no frequent category
    assert results["segm"]["AP"] > 90
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["bbox/AP"] == pytest.approx(100.0)
    assert "segm/APc" in metrics
    with open(os.path.join(out, "per_category_ap.json")) as f:
        rows = json.load(f)
    assert [r["id"] for r in rows] == [10, 20, 30]
    assert [r["frequency"] for r in rows] == ["r", "r", "r"]
    assert all(r["bbox/AP"] == pytest.approx(100.0) for r in rows)
    assert os.path.getsize(os.path.join(out, "per_category_ap.png")) > 0


def test_category_ids_map_back_to_dataset_ids(tmp_path):
    """Contiguous class 2 is dataset category 30: its correct detections alone give category 30
    an AP of 100 and the others 0, so AP = 100 / 3 (a wrong id mapping would give 0)."""
    from detectron2.data import DatasetCatalog

    images = write_images(tmp_path / "images")
    register_longtail_dataset("ev_ids", write_json(tmp_path / "b.json", coco_dict()), images)
    evaluator = LongTailLVISEvaluator("ev_ids", None, distributed=False)
    evaluator.reset()
    inputs, outputs = _perfect_outputs(DatasetCatalog.get("ev_ids"))
    outputs = [{"instances": o["instances"][o["instances"].pred_classes == 2]} for o in outputs]
    evaluator.process(inputs, outputs)
    results = evaluator.evaluate()
    assert results["bbox"]["AP"] == pytest.approx(100.0 / 3)


def test_detectron2_builtin_lvis_registration(tmp_path):
    """The path of detectron2's builtin LVIS names: images by coco_url, ids 1-based, no id map,
    statistics computed lazily from the loaded annotations."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets.lvis import register_lvis_instances

    from longtail_d2.data import get_class_statistics

    write_images(tmp_path / "coco" / "train2017")
    data = coco_dict()
    data["annotations"] = [a for a in data["annotations"] if not a["iscrowd"]]
    data["categories"] = [
        dict(c, id=i + 1, frequency="c") for i, c in enumerate(data["categories"])
    ]
    remap = {10: 1, 20: 2, 30: 3}
    data["annotations"] = [
        dict(a, category_id=remap[a["category_id"]]) for a in data["annotations"]
    ]
    for img in data["images"]:
        img["coco_url"] = f"http://host/train2017/{img.pop('file_name')}"
        img["neg_category_ids"], img["not_exhaustive_category_ids"] = [], []
    json_file = write_json(tmp_path / "lvis" / "lvis_fake_train.json", data)
    # detectron2 then takes the class names of LVIS v1 from the name (1203 classes).
    register_lvis_instances("lvis_v1_fake_train", {}, json_file, str(tmp_path / "coco") + "/")
    stats = get_class_statistics("lvis_v1_fake_train")
    assert stats.image_count[:3].tolist() == [3, 2, 1] and stats.image_count.sum() == 6
    assert stats.num_images == 4
    evaluator = LongTailLVISEvaluator("lvis_v1_fake_train", None, distributed=False)
    evaluator.reset()
    evaluator.process(*_perfect_outputs(DatasetCatalog.get("lvis_v1_fake_train")))
    assert evaluator.evaluate()["bbox"]["APc"] == pytest.approx(100.0)


def _register_generated(tmp_path, name):
    """test_lvis_eval's generated LVIS-format case as a registered dataset (blank images)."""
    from PIL import Image

    from tests.evaluation.test_lvis_eval import SIZE, generated_case

    gt, dets = generated_case()
    for img in gt["images"]:
        img["file_name"] = f"{img['id']}.png"
        Image.new("RGB", (SIZE, SIZE)).save(tmp_path / img["file_name"])
    json_file = write_json(tmp_path / "gt.json", gt)
    register_longtail_dataset(name, json_file, str(tmp_path))
    return json_file, dets


def _outputs_of(dets, image_ids):
    """Model outputs (contiguous classes = dataset id - 1, boolean masks) holding ``dets``."""
    from pycocotools import mask as mask_util

    from tests.evaluation.test_lvis_eval import SIZE

    inputs, outputs = [], []
    for image_id in image_ids:
        mine = [d for d in dets if d["image_id"] == image_id]
        inst = Instances((SIZE, SIZE))
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in mine)]
        inst.pred_boxes = Boxes(torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.tensor([d["score"] for d in mine], dtype=torch.float32)
        inst.pred_classes = torch.tensor([d["category_id"] - 1 for d in mine], dtype=torch.int64)
        rles = [dict(d["segmentation"], counts=d["segmentation"]["counts"].encode()) for d in mine]
        masks = mask_util.decode(rles) if rles else np.zeros((SIZE, SIZE, 0), np.uint8)
        inst.pred_masks = torch.from_numpy(masks.transpose(2, 0, 1).astype(bool))
        inputs.append({"image_id": image_id})
        outputs.append({"instances": inst})
    return inputs, outputs


def test_offline_evaluation_equals_the_evaluator(tmp_path):
    """The evaluator writes its predictions as it goes, merges them into instances_results.json
    and scores them; tools/evaluate.py on that file gives the same numbers (to 1e-9) and files."""
    import subprocess
    import sys

    from tests.conftest import INSTANT, REPO

    json_file, dets = _register_generated(tmp_path, "ev_offline")
    out = tmp_path / "inference"
    evaluator = LongTailLVISEvaluator("ev_offline", str(out), distributed=False, flush_every=7)
    evaluator.reset()
    evaluator.process(*_outputs_of(dets, range(1, 61)))
    assert len(list((out / "predictions").iterdir())) == 8  # 60 images, a file per 7
    results = evaluator.evaluate()
    assert not (out / "predictions").exists()
    assert 20 < results["bbox"]["AP"] < 90 and 20 < results["segm"]["AP"] < 90
    with open(out / "instances_results.json") as f:
        assert len(json.load(f)) == len(dets)
    offline = tmp_path / "offline"
    custom = f"[('ev_offline', '{json_file}', '{tmp_path}')]"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "evaluate.py"),
            str(out / "instances_results.json"),
            "--dataset",
            "ev_offline",
            "--config-file",
            INSTANT,
            "--output",
            str(offline),
            "DATASETS.SYNTHETIC.ROOT", "",
            "DATASETS.CUSTOM", custom,
            "DATASETS.TRAIN", "('ev_offline',)",
            "DATASETS.TEST", "('ev_offline',)",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    def load(folder, name):
        with open(folder / name) as f:
            return json.load(f)

    ours, theirs = load(out, "metrics.json"), load(offline, "metrics.json")
    assert set(ours) == set(theirs)
    for key, value in ours.items():  # strict JSON: null for nan
        assert (value is None and theirs[key] is None) or abs(value - theirs[key]) <= 1e-9, key
    ours, theirs = load(out, "per_category_ap.json"), load(offline, "per_category_ap.json")
    assert [r["id"] for r in theirs] == [r["id"] for r in ours]
    for a, b in zip(ours, theirs):
        for key in ("bbox/AP", "segm/AP"):
            assert (a[key] is None and b[key] is None) or abs(a[key] - b[key]) <= 1e-9
    assert (offline / "per_category_ap.csv").exists() and (offline / "summary.txt").exists()


def test_model_cap_below_the_lvis_protocol_warns(tmp_path, caplog):
    """TEST.DETECTIONS_PER_IMAGE < TEST.LVIS_MAX_DETS_PER_IMAGE cuts low-scoring (rare) classes
    before the LVIS evaluation: the evaluator's builder says so; not at 300, not for COCO."""
    from detectron2.config import get_cfg

    from longtail_d2.config import add_longtail_config
    from longtail_d2.evaluation import build_longtail_evaluator
    from longtail_d2.evaluation.lvis_evaluator import detection_cap_warning

    cfg = add_longtail_config(get_cfg())
    cfg.TEST.DETECTIONS_PER_IMAGE = 100  # detectron2's default
    message = detection_cap_warning(cfg)
    assert "TEST.DETECTIONS_PER_IMAGE 100" in message and "LVIS_MAX_DETS_PER_IMAGE 300" in message
    cfg.TEST.EVALUATOR = "coco"
    assert detection_cap_warning(cfg) is None
    cfg.TEST.EVALUATOR = ""
    cfg.TEST.DETECTIONS_PER_IMAGE = 300
    assert detection_cap_warning(cfg) is None

    register_longtail_dataset(
        "ev_cap", write_json(tmp_path / "a.json", coco_dict()), write_images(tmp_path / "images")
    )
    cfg.TEST.DETECTIONS_PER_IMAGE = 50
    # Listen on the module's logger itself: detectron2's setup_logger (called by other tests'
    # tools) stops "longtail_d2" from propagating to caplog's root handler.
    logger = logging.getLogger("longtail_d2.evaluation.lvis_evaluator")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level("WARNING", logger="longtail_d2.evaluation.lvis_evaluator"):
            build_longtail_evaluator(cfg, "ev_cap", str(tmp_path / "out"))
    finally:
        logger.removeHandler(caplog.handler)
    assert any("TEST.DETECTIONS_PER_IMAGE 50" in r.getMessage() for r in caplog.records)
