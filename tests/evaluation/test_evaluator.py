import json
import math
import os

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
