"""tools/visualize.py on the instant config's generated data: a results file ranked for the
rare group, a model's predictions, the dataset summary, group colours and one-line errors."""

import csv
import json
import os
import runpy
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import INSTANT, REPO

TOOL = os.path.join(REPO, "tools", "visualize.py")
RGB = {"r": (214, 39, 40), "c": (255, 127, 14), "f": (31, 119, 180)}


@pytest.fixture(scope="module")
def tool():
    return runpy.run_path(TOOL, run_name="visualize_tool")["main"]


@pytest.fixture(scope="module")
def instant_val(datasets_root):
    """The instant config's validation set (generated on first use) and its LVIS file."""
    from longtail_d2.engine import prepare_run

    prepare_run(INSTANT)
    with open(os.path.join(datasets_root, "longtail_synth_instant", "lvis_val.json")) as f:
        return json.load(f)


def rare_images(gt):
    rare = {c["id"] for c in gt["categories"] if c["frequency"] == "r"}
    ids = sorted({a["image_id"] for a in gt["annotations"] if a["category_id"] in rare})
    return rare, ids


def test_rare_group_ranking_from_a_results_file(tool, instant_val, tmp_path):
    """Every GT box becomes a detection of score 0.9, except: image A's rare instances are
    missed (badness 1 - 0 = 1.0) and image B's are found with score 0.4 (badness 0.6); every
    other image with rare instances has badness 1 - 0.9 = 0.1."""
    gt = instant_val
    rare, ids = rare_images(gt)
    assert len(ids) >= 3
    a, b = ids[1], ids[0]
    results = []
    for ann in gt["annotations"]:
        score = 0.9
        if ann["category_id"] in rare and ann["image_id"] == b:
            score = 0.4
        if ann["category_id"] in rare and ann["image_id"] == a:
            continue
        results.append(
            {"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": ann["bbox"],
             "score": score}
        )
    path = tmp_path / "instances_results.json"
    path.write_text(json.dumps(results))
    out = tmp_path / "vis"
    tool(["--config-file", INSTANT, "--results", str(path), "--group", "r",
          "--max-images", "3", "--output", str(out)])
    with open(out / "ranking.csv") as f:
        ranking = list(csv.DictReader(f))
    assert [int(r["image_id"]) for r in ranking[:2]] == [a, b]
    expected = [1.0, 0.6] + [0.1] * (len(ids) - 2)
    assert [float(r["badness"]) for r in ranking] == pytest.approx(expected)
    assert len(ranking) == len(ids)
    pngs = sorted(os.listdir(out))
    assert len([p for p in pngs if p.endswith(".png")]) == 3
    image = Image.open(out / f"{a}_{a:06d}.png")
    # two panels of the 128 px image drawn at 4x (512 px) and an 8 px gap
    assert image.size == (2 * 512 + 8, 512)


def test_model_predictions_and_image_ids(tool, instant_val, tmp_path):
    """A checkpoint of the instant config's model (untrained: only the route is checked)."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer

    from longtail_d2.engine import prepare_run, trainer_class

    cfg = prepare_run(INSTANT, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = trainer_class(cfg).build_model(cfg)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("random")
    out = tmp_path / "vis"
    ids = [str(i["id"]) for i in instant_val["images"][:2]]
    tool(["--config-file", INSTANT, "--image-ids", *ids, "--score-threshold", "0",
          "--output", str(out), "MODEL.DEVICE", "cpu",
          "MODEL.WEIGHTS", str(tmp_path / "random.pth")])
    assert sorted(os.listdir(out)) == [f"{i}_{int(i):06d}.png" for i in ids]
    assert Image.open(out / f"{ids[0]}_{int(ids[0]):06d}.png").size == (1032, 512)


def near(image, rgb, tolerance=8):
    return int((np.abs(image.astype(int) - np.array(rgb)) <= tolerance).all(axis=-1).sum())


def test_boxes_are_coloured_by_group(instant_val, tmp_path):
    """On a flat grey image, a rare and a frequent box: their edges (alpha 0.5 over grey 128)
    show each group's colour, blended; no common-colour pixels."""
    from detectron2.data import MetadataCatalog
    from detectron2.structures import BoxMode

    from longtail_d2.evaluation.viewer import draw_image

    Image.fromarray(np.full((128, 128, 3), 128, dtype=np.uint8)).save(tmp_path / "grey.png")
    meta = MetadataCatalog.get("longtail_synth_val")
    frequency = ["r", "f"] + ["c"] * (len(meta.thing_classes) - 2)
    d = {
        "file_name": str(tmp_path / "grey.png"), "image_id": 1, "height": 128, "width": 128,
        "annotations": [
            {"category_id": 0, "bbox": [10, 10, 40, 40], "bbox_mode": BoxMode.XYWH_ABS},
            {"category_id": 1, "bbox": [70, 70, 40, 40], "bbox_mode": BoxMode.XYWH_ABS},
        ],
    }
    image = draw_image(d, meta, frequency)
    blend = {g: tuple((np.array(c) + 128) / 2) for g, c in RGB.items()}
    assert near(image, blend["r"]) > 100 and near(image, blend["f"]) > 100
    assert near(image, blend["c"]) == 0


def test_dataset_summary_plot(tool, instant_val, tmp_path):
    tool(["--config-file", INSTANT, "--summary", "--dataset", "longtail_synth_train",
          "--output", str(tmp_path)])
    image = np.asarray(Image.open(tmp_path / "longtail_synth_train_summary.png").convert("RGB"))
    assert image.shape[1] <= 1600
    # the instant training set has rare and common classes (bars in their exact colours)
    assert near(image, RGB["r"], 0) > 500 and near(image, RGB["c"], 0) > 500


def test_unknown_category_is_a_one_line_error(datasets_root):
    proc = subprocess.run(
        [sys.executable, TOOL, "--config-file", INSTANT, "--categories", "no_such_class"],
        capture_output=True, text=True, cwd=REPO,
        env=dict(os.environ, DETECTRON2_DATASETS=datasets_root),
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --categories: 'no_such_class' is neither a category name nor id of "
        "longtail_synth_val"
    )
