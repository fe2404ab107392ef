import json
import math
import os

import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances

from longtail_d2.data import register_longtail_dataset
from longtail_d2.evaluation import LongTailLVISEvaluator
from tests.conftest import write_json
from tests.data.small_dataset import SQUARE, coco_dict, write_images


def _perfect_outputs(dataset_dicts):
    """Model outputs equal to the ground truth (contiguous class ids, full-image masks)."""
    inputs, outputs = [], []
    for record in dataset_dicts:
        inst = Instances((record["height"], record["width"]))
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in record["annotations"])]
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.linspace(0.9, 0.5, len(boxes))
        inst.pred_classes = torch.tensor([a["category_id"] for a in record["annotations"]],
                                         dtype=torch.int64)
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
