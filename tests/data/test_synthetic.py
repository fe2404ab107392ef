import filecmp
import json
import os

import numpy as np
import pytest
from detectron2.config import get_cfg
from PIL import Image

from longtail_d2.config import add_longtail_config
from longtail_d2.data import SyntheticConfig, ensure_synthetic_dataset, generate_longtail_dataset
from longtail_d2.data.class_statistics import frequency_groups
from longtail_d2.data.synthetic import EXTRA_COLORS, _train_classes, class_names

SMALL = SyntheticConfig(
    seed=3,
    num_classes=8,
    num_train_images=30,
    num_val_images=6,
    min_val_images_per_class=1,
    image_size=64,
)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synth") / "a")
    generate_longtail_dataset(root, SMALL)
    return root


def _load(root, split):
    with open(os.path.join(root, f"lvis_{split}.json")) as f:
        return json.load(f)


def test_deterministic_by_seed(small, tmp_path):
    again = str(tmp_path / "b")
    generate_longtail_dataset(again, SMALL)
    for name in ("lvis_train.json", "lvis_val.json", "train/000001.jpg", "val/000006.jpg"):
        assert filecmp.cmp(os.path.join(small, name), os.path.join(again, name), shallow=False)
    other = str(tmp_path / "c")
    generate_longtail_dataset(other, SyntheticConfig(**{**SMALL.__dict__, "seed": 4}))
    assert _load(other, "train") != _load(small, "train")


def test_json_is_consistent(small):
    train, val = _load(small, "train"), _load(small, "val")
    assert train["categories"] == val["categories"]  # both carry the training statistics
    counts = np.zeros(8, dtype=int)
    for image_id, cat in {(a["image_id"], a["category_id"]) for a in train["annotations"]}:
        counts[cat - 1] += 1
    assert [c["image_count"] for c in train["categories"]] == counts.tolist()
    assert [c["frequency"] for c in train["categories"]] == frequency_groups(counts)
    for split in (train, val):
        present = {}
        for a in split["annotations"]:
            present.setdefault(a["image_id"], set()).add(a["category_id"])
            x, y, w, h = a["bbox"]
            assert 0 <= x and 0 <= y and x + w <= 64 and y + h <= 64 and a["area"] > 0
        for img in split["images"]:
            assert not set(img["neg_category_ids"]) & present.get(img["id"], set())
            assert set(img["not_exhaustive_category_ids"]) <= present.get(img["id"], set())
            assert os.path.isfile(os.path.join(small, img["file_name"]))
    assert {c for s in present.values() for c in s} == set(range(1, 9))  # val covers all


def test_default_size_has_lvis_like_groups():
    # Class assignment of the default dataset (rendering may drop an instance that does not fit;
    # the demo's json has 10 f / 11 c / 9 r).
    cfg = SyntheticConfig()
    per_image = _train_classes(np.random.default_rng(cfg.seed), cfg)
    counts = np.bincount([k for ks in per_image for k in ks], minlength=cfg.num_classes)
    groups = frequency_groups(counts)
    assert groups.count("r") >= 5 and groups.count("c") >= 5 and groups.count("f") >= 5
    assert counts.min() >= 1 and counts.max() == 600


def test_class_names_are_distinct():
    names = class_names(70)
    assert len(set(names)) == 70
    # The first 42 keep the names they had when 42 was the limit (k = 7a + b: shape b, colour
    # (a + b) % 6), so the demo's dataset does not change; 42 + 7a + b: colour (a + b) % 4 of
    # orange, purple, white, black.
    assert names[:3] == ["red_circle", "green_square", "blue_triangle"]
    assert names[41] == "cyan_cross"  # a=5, b=6: colour 11 % 6 = 5
    assert names[42] == "orange_circle" and names[69] == "purple_cross"  # a=3, b=6: 9 % 4 = 1
    assert class_names(30) == names[:30]


def test_too_many_classes_for_the_images_is_an_error():
    # At the default head fraction 0.4, 42 classes need more class slots (3 per image) than
    # 1,500 images have: the tail classes used to get 0 images silently.
    with pytest.raises(ValueError, match=r"class \d+ of 42 needs .*HEAD_IMAGE_FRACTION \(0.4\)"):
        _train_classes(np.random.default_rng(0), SyntheticConfig(num_classes=42))


def test_too_many_classes_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="HEAD_IMAGE_FRACTION"):
        generate_longtail_dataset(str(tmp_path / "x"), SyntheticConfig(num_classes=42))
    assert os.listdir(tmp_path) == []


def test_head_image_fraction_sets_the_counts():
    # 60 classes, the head class in 20 % of 1,500 images: counts 300 * (2 / 300)^(k / 59), so
    # rare (<= 10 images) from k >= 59 ln(30) / ln(150) = 39.9, i.e. 20 rare classes.
    cfg = SyntheticConfig(num_classes=60, head_image_fraction=0.2)
    per_image = _train_classes(np.random.default_rng(cfg.seed), cfg)
    counts = np.bincount([k for ks in per_image for k in ks], minlength=60)
    assert counts[0] == 300 and counts[-1] == 2 and counts.min() == 2
    assert frequency_groups(counts).count("r") == 20
    assert max(len(ks) for ks in per_image) <= 3


def test_extra_colours_are_rendered(tmp_path):
    cfg = SyntheticConfig(
        seed=1,
        num_classes=46,
        num_train_images=200,
        num_val_images=46,
        min_val_images_per_class=1,
        image_size=64,
        head_image_fraction=0.1,
    )
    root = str(tmp_path / "w")
    generate_longtail_dataset(root, cfg)
    val = _load(root, "val")
    assert val["categories"][45]["name"] == "black_diamond"
    # The pixel at an isolated object's centroid has its class colour (+- 20 jitter, +- noise).
    checked = 0
    for a in val["annotations"]:
        if a["category_id"] < 43:
            continue
        name = val["categories"][a["category_id"] - 1]["name"]
        xy = np.array(a["segmentation"][0]).reshape(-1, 2)
        cx, cy = xy.mean(0)
        image = next(i for i in val["images"] if i["id"] == a["image_id"])
        pixel = np.asarray(Image.open(os.path.join(root, image["file_name"])))[int(cy), int(cx)]
        assert np.abs(pixel.astype(int) - EXTRA_COLORS[name.split("_")[0]]).max() <= 45, name
        checked += 1
    assert checked >= 4
    with open(os.path.join(root, "generator.json")) as f:
        assert json.load(f)["head_image_fraction"] == 0.1


def test_reuse_checks_parameters(small):
    ensure_synthetic_dataset(small, SMALL)  # same parameters: reused as is
    with pytest.raises(ValueError, match="generated with other parameters"):
        ensure_synthetic_dataset(small, SyntheticConfig(**{**SMALL.__dict__, "seed": 9}))


def test_test_split_leaves_train_and_val_unchanged(small, tmp_path):
    with_test = str(tmp_path / "t")
    cfg = SyntheticConfig(**{**SMALL.__dict__, "num_test_images": 5})
    generate_longtail_dataset(with_test, cfg)
    for name in ("lvis_train.json", "lvis_val.json", "train/000030.jpg", "val/000006.jpg"):
        assert filecmp.cmp(os.path.join(small, name), os.path.join(with_test, name), shallow=False)
    test = _load(with_test, "test")
    assert test["categories"] == _load(small, "train")["categories"]
    assert [img["id"] for img in test["images"]] == [1, 2, 3, 4, 5]
    assert all(img["file_name"].startswith("test/") for img in test["images"])
    assert test["images"] != _load(small, "val")["images"][:5]  # drawn after val, not a copy
    # Every class in >= min_val_images_per_class (1) test images, like val.
    assert {a["category_id"] for a in test["annotations"]} == set(range(1, 9))
    assert not os.path.exists(os.path.join(small, "lvis_test.json"))


def test_test_split_min_images_per_class(tmp_path):
    # As many images as class slots (8 x 3), so no image draws one class twice, and 128 px so
    # that every object fits: each class is then in >= 3 images of both evaluation splits.
    root = str(tmp_path / "m")
    sizes = {"num_val_images": 24, "num_test_images": 24, "image_size": 128}
    cfg = SyntheticConfig(**{**SMALL.__dict__, **sizes, "min_val_images_per_class": 3})
    generate_longtail_dataset(root, cfg)
    for split in ("val", "test"):
        pairs = {(a["image_id"], a["category_id"]) for a in _load(root, split)["annotations"]}
        counts = np.bincount([c - 1 for _, c in pairs], minlength=8)
        assert counts.min() >= 3, (split, counts)


def test_generator_json_without_test_split_is_unchanged(small, tmp_path):
    # The parameters file of a dataset without a test split has exactly the keys it had before
    # the split existed, so folders generated by older versions are reused, not rejected.
    with open(os.path.join(small, "generator.json")) as f:
        params = json.load(f)
    assert params == {
        "seed": 3,
        "num_classes": 8,
        "num_train_images": 30,
        "num_val_images": 6,
        "min_val_images_per_class": 1,
        "image_size": 64,
        "max_objects": 5,
        "generator_version": 1,
    }
    # Asking for a test split in a folder generated without one is a parameter mismatch.
    with pytest.raises(ValueError, match="num_test_images"):
        ensure_synthetic_dataset(small, SyntheticConfig(**{**SMALL.__dict__, "num_test_images": 4}))


def test_wide_benchmark_preset_has_20_rare_classes():
    # configs/Benchmark/Benchmark-Wide.yaml: 60 classes (the model's class count too), 13 f / 27
    # c / 20 r, every class in >= 2 training images.
    cfg = get_cfg()
    add_longtail_config(cfg)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg.merge_from_file(os.path.join(repo, "configs", "Benchmark", "Benchmark-Wide.yaml"))
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == cfg.DATASETS.SYNTHETIC.NUM_CLASSES == 60
    synth = SyntheticConfig.from_cfg(cfg)
    per_image = _train_classes(np.random.default_rng(synth.seed), synth)
    counts = np.bincount([k for ks in per_image for k in ks], minlength=60)
    groups = frequency_groups(counts)
    assert (groups.count("f"), groups.count("c"), groups.count("r")) == (13, 27, 20)
    assert counts.min() == 2
