import numpy as np
import pytest
from detectron2.config import get_cfg

from longtail_d2.config import add_longtail_config
from longtail_d2.data import get_class_statistics, register_datasets_from_config
from longtail_d2.data.class_statistics import compute_class_statistics, frequency_groups
from tests.conftest import write_json
from tests.data.small_dataset import coco_dict, write_images


def test_frequency_group_boundaries():
    # LVIS: rare 1-10 training images, common 11-100, frequent > 100.
    assert frequency_groups([1, 10, 11, 100, 101, 5000]) == ["r", "r", "c", "c", "f", "f"]


def test_counts_by_hand():
    dicts = [
        {"annotations": [{"category_id": 0}, {"category_id": 0}, {"category_id": 2}]},
        {"annotations": [{"category_id": 2}]},
        {"annotations": []},  # not counted in the denominator
    ]
    stats = compute_class_statistics(dicts, 3)
    assert stats.image_count.tolist() == [1, 0, 2]
    assert stats.instance_count.tolist() == [2, 0, 2]
    assert stats.num_images == 2
    np.testing.assert_allclose(stats.image_frequency, [0.5, 0.0, 1.0])


def _cfg(custom, train=(), test=()):
    cfg = get_cfg()
    add_longtail_config(cfg)
    cfg.DATASETS.CUSTOM = custom
    cfg.DATASETS.TRAIN = train
    cfg.DATASETS.TEST = test
    return cfg


def test_custom_registration_and_metadata(tmp_path, datasets_root):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    images = write_images(tmp_path / "images")
    train = write_json(tmp_path / "train.json", coco_dict())
    # A COCO-format test file with the same classes: its frequency groups must come from the
    # training set (in its own annotations cat 10 has a single image).
    val = coco_dict()
    val["annotations"] = val["annotations"][:1]
    val_file = write_json(tmp_path / "val.json", val)
    register_datasets_from_config(
        _cfg(
            [["sc_train", train, images], ("sc_val", val_file, images)], ("sc_train",), ("sc_val",)
        )
    )
    assert len(DatasetCatalog.get("sc_train")) == 5
    meta = MetadataCatalog.get("sc_train")
    assert meta.thing_classes == ["a", "b", "c"]
    assert meta.evaluator_type == "lvis"
    # Counted by hand in small_dataset.py: the crowd annotation is not an instance.
    assert meta.category_image_count == [3, 2, 1]
    assert meta.category_instance_count == [4, 2, 1]
    assert meta.num_annotated_images == 4
    stats = get_class_statistics(["sc_train"])
    assert stats.frequency == ["r", "r", "r"]
    assert MetadataCatalog.get("sc_val").category_image_count == [1, 0, 0]
    # Union of two training sets: counts add up.
    both = get_class_statistics(["sc_train", "sc_val"])
    assert both.image_count.tolist() == [4, 2, 1]
    assert both.num_images == 5


def test_relative_paths_and_unknown_name(tmp_path, datasets_root):
    from longtail_d2.data import DatasetError

    write_images(f"{datasets_root}/rel/images")
    write_json(f"{datasets_root}/rel/train.json", coco_dict())
    register_datasets_from_config(
        _cfg([["rel_train", "rel/train.json", "rel/images"]], ("rel_train",))
    )
    assert get_class_statistics("rel_train").num_images == 4
    with pytest.raises(DatasetError, match="'typo_train' is not registered"):
        register_datasets_from_config(_cfg([], ("typo_train",)))
    with pytest.raises(DatasetError, match="DATASETS.CUSTOM"):
        register_datasets_from_config(_cfg([["only_two", "x.json"]]))


def test_builtin_lvis_frequency_groups():
    from detectron2.data import MetadataCatalog

    from longtail_d2.data import category_frequency

    # Looked up on demand from detectron2's category lists; its catalogue is not edited.
    assert "category_frequency" not in MetadataCatalog.get("lvis_v1_train").as_dict()
    freq = category_frequency("lvis_v1_train")
    assert len(freq) == len(MetadataCatalog.get("lvis_v1_train").thing_classes)
    # Counts computed in METHODS.md from the LVIS v1 category file: 337 r / 461 c / 405 f.
    assert (freq.count("r"), freq.count("c"), freq.count("f")) == (337, 461, 405)
    freq = category_frequency("lvis_v0.5_val")
    assert (freq.count("r"), freq.count("c"), freq.count("f")) == (454, 461, 315)
    assert "category_frequency" not in MetadataCatalog.get("lvis_v0.5_val").as_dict()


def test_placeholder_when_training_annotations_are_missing(caplog):
    """One stand-in, neutral for every consumer (see ClassStatistics.placeholder)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from longtail_d2.data import ClassStatistics, training_class_statistics

    def missing():
        raise FileNotFoundError("gone.json")

    DatasetCatalog.register("gone_train", missing)
    cfg = _cfg([], ("gone_train",))
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    MetadataCatalog.get("gone_train").set(thing_classes=["a", "b", "c"])
    stats = training_class_statistics(cfg)
    assert stats.is_placeholder and "gone.json" in caplog.text
    assert stats.num_images == ClassStatistics.placeholder(3).num_images == 2
    np.testing.assert_allclose(stats.image_frequency, [0.5, 0.5, 0.5])  # Balanced shift 0
    assert stats.frequency == ["f", "f", "f"]  # no EQL / DropLoss tail class
    assert stats.instance_count.tolist() == [1, 1, 1]


def test_coco_test_set_takes_training_frequency(tmp_path, datasets_root):
    from detectron2.data import MetadataCatalog

    from longtail_d2.data import lvis_ground_truth

    images = write_images(tmp_path / "images")
    base = coco_dict()
    # Training set: category 10 in 12 images (common), 20 in 1 image (rare), 30 in none.
    train = {
        "images": [dict(base["images"][0], id=i, file_name="img1.png") for i in range(1, 13)],
        "annotations": [dict(base["annotations"][0], id=i, image_id=i) for i in range(1, 13)]
        + [dict(base["annotations"][2], id=100, image_id=1)],
        "categories": base["categories"],
    }
    register_datasets_from_config(
        _cfg(
            [
                ["ft_train", write_json(tmp_path / "t.json", train), images],
                ["ft_val", write_json(tmp_path / "v.json", base), images],
            ],
            ("ft_train",),
            ("ft_val",),
        )
    )
    assert MetadataCatalog.get("ft_train").category_frequency == ["c", "r", "r"]
    # In its own annotations the validation set would be all rare; it gets the training groups.
    assert MetadataCatalog.get("ft_val").category_frequency == ["c", "r", "r"]
    gt_freq = [c["frequency"] for c in lvis_ground_truth("ft_val")["categories"]]
    assert gt_freq == ["c", "r", "r"]


def test_ground_truth_is_rebuilt_not_shared(tmp_path, datasets_root):
    """LVIS GT comes from the dataset's files through its metadata, with new category dicts:
    editing one answer changes neither the next one nor the loaded dataset."""
    from detectron2.data import MetadataCatalog

    from longtail_d2.data import lvis_ground_truth, register
    from longtail_d2.data.register import _load_file

    assert not hasattr(register, "_LVIS_GT")
    images = write_images(tmp_path / "images")
    train = write_json(tmp_path / "gt.json", coco_dict())
    register_datasets_from_config(_cfg([["gt_train", train, images]], ("gt_train",)))
    first = lvis_ground_truth("gt_train")
    assert [c["frequency"] for c in first["categories"]] == ["r", "r", "r"]
    first["categories"][0]["frequency"] = "f"
    first["categories"].append({"id": 99})
    second = lvis_ground_truth("gt_train")
    assert [c["frequency"] for c in second["categories"]] == ["r", "r", "r"]
    loaded = _load_file(train, images)
    assert all(c["frequency"] == "r" for c in loaded.categories)
    assert MetadataCatalog.get("gt_train").category_frequency == ["r", "r", "r"]


def test_registered_dataset_keeps_no_records(tmp_path, datasets_root):
    """Registration reads the file once and hands that copy to its first reader only; every
    later DatasetCatalog.get re-reads the file (as detectron2's builtin LVIS sets do), so a
    process keeps no copy of the records it did not ask to keep. (With the records kept in the
    registered closure, the edit below shows up in the second read.)"""
    from detectron2.data import DatasetCatalog

    from longtail_d2.data import register
    from longtail_d2.data.register import release_loaded_datasets

    images = write_images(tmp_path / "images")
    train = write_json(tmp_path / "keep.json", coco_dict())
    def held():  # copies of this file held by registration
        return [key for key in register._HELD if key[0] == train]

    register_datasets_from_config(_cfg([["keep_train", train, images]], ("keep_train",)))
    assert held()
    first = DatasetCatalog.get("keep_train")
    assert not held()  # handed over, not kept
    first[0]["annotations"].clear()
    second = DatasetCatalog.get("keep_train")
    assert [len(r["annotations"]) for r in second] == [3, 1, 1, 2, 0]  # small_dataset.py
    # A dataset nobody read yet is dropped on release and re-read on request.
    register_datasets_from_config(_cfg([["keep_val", train, images]], (), ("keep_val",)))
    assert held()
    release_loaded_datasets()
    assert not held()
    assert len(DatasetCatalog.get("keep_val")) == 5


def test_frequency_thresholds_from_the_config(tmp_path, datasets_root):
    """DATASETS.FREQUENCY_GROUP_THRESHOLDS bounds the groups derived from a COCO file's own
    image counts (3, 2, 1 images by hand): rare <= 1, common <= 2, frequent above."""
    from detectron2.data import MetadataCatalog

    assert frequency_groups([1, 2, 3], thresholds=(1, 2)) == ["r", "c", "f"]
    images = write_images(tmp_path / "images")
    train = write_json(tmp_path / "train.json", coco_dict())
    cfg = _cfg([["thr_train", train, images]], ("thr_train",))
    cfg.DATASETS.FREQUENCY_GROUP_THRESHOLDS = (1, 2)
    register_datasets_from_config(cfg)
    assert MetadataCatalog.get("thr_train").category_frequency == ["f", "c", "r"]
    assert get_class_statistics(["thr_train"]).frequency == ["f", "c", "r"]
