import filecmp
import json
import os

import numpy as np
import pytest

from longtail_d2.data import SyntheticConfig, ensure_synthetic_dataset, generate_longtail_dataset
from longtail_d2.data.class_statistics import frequency_groups
from longtail_d2.data.synthetic import _train_classes, class_names

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
    names = class_names(42)
    assert len(set(names)) == 42


def test_reuse_checks_parameters(small):
    ensure_synthetic_dataset(small, SMALL)  # same parameters: reused as is
    with pytest.raises(ValueError, match="generated with other parameters"):
        ensure_synthetic_dataset(small, SyntheticConfig(**{**SMALL.__dict__, "seed": 9}))
