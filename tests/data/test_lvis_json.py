import pytest

from longtail_d2.data import DatasetError, load_longtail_json
from tests.conftest import write_json
from tests.data.small_dataset import coco_dict, write_images


@pytest.fixture
def coco_file(tmp_path):
    write_images(tmp_path / "images")
    return write_json(tmp_path / "coco.json", coco_dict()), str(tmp_path / "images")


def test_coco_file_becomes_lvis_style(coco_file):
    loaded = load_longtail_json(*coco_file)
    assert not loaded.is_lvis_format
    assert loaded.id_map == {10: 0, 20: 1, 30: 2}
    gt_images = {img["id"]: img for img in loaded.lvis_gt["images"]}
    # Exhaustive COCO annotation: every absent category is a verified negative ...
    assert gt_images[1]["neg_category_ids"] == [30]
    assert gt_images[2]["neg_category_ids"] == [20, 30]
    assert gt_images[5]["neg_category_ids"] == [10, 20, 30]
    # ... except a crowd's category, which is present but not exhaustively annotated.
    assert gt_images[3]["neg_category_ids"] == [10]
    assert gt_images[3]["not_exhaustive_category_ids"] == [30]
    assert gt_images[1]["not_exhaustive_category_ids"] == []
    # Crowd annotations are dropped (LVIS has none); ids of the others are kept.
    assert sorted(a["id"] for a in loaded.lvis_gt["annotations"]) == [1, 2, 3, 4, 6, 7, 8]
    # Image counts 3, 2, 1 -> all rare, from this file's own annotations.
    assert [c["frequency"] for c in loaded.categories] == ["r", "r", "r"]
    assert [c["image_count"] for c in loaded.categories] == [3, 2, 1]
    record = next(r for r in loaded.dataset_dicts if r["image_id"] == 1)
    assert record["file_name"].endswith("img1.png")
    assert [a["category_id"] for a in record["annotations"]] == [0, 0, 1]


def test_lvis_fields_are_kept(coco_file, tmp_path):
    data = coco_dict()
    data["images"] = [
        dict(img, neg_category_ids=[20], not_exhaustive_category_ids=[10]) for img in data["images"]
    ]
    data["categories"] = [dict(c, frequency="f") for c in data["categories"]]
    loaded = load_longtail_json(write_json(tmp_path / "lvis.json", data), coco_file[1])
    assert loaded.is_lvis_format
    assert all(img["neg_category_ids"] == [20] for img in loaded.lvis_gt["images"])
    assert [c["frequency"] for c in loaded.categories] == ["f", "f", "f"]


def _expect_error(json_file, image_root, *fragments):
    with pytest.raises(DatasetError) as info:
        load_longtail_json(json_file, image_root)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_file(tmp_path):
    _expect_error(str(tmp_path / "nope.json"), str(tmp_path), "nope.json", "not found")


def test_malformed_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"images": [')
    _expect_error(str(path), str(tmp_path), "bad.json", "not valid JSON")


def test_missing_key(tmp_path):
    _expect_error(
        write_json(tmp_path / "x.json", {"images": []}), str(tmp_path), "x.json", "annotations"
    )


def test_unknown_category(coco_file, tmp_path):
    data = coco_dict()
    data["annotations"][0] = dict(data["annotations"][0], category_id=99)
    path = write_json(tmp_path / "badcat.json", data)
    _expect_error(path, coco_file[1], "badcat.json", "category_id 99", "annotation id 1")


def test_empty_dataset(tmp_path):
    path = write_json(tmp_path / "empty.json", {"images": [], "annotations": [], "categories": []})
    _expect_error(path, str(tmp_path), "empty.json", "empty dataset")


def test_missing_image(coco_file, tmp_path):
    data = coco_dict()
    data["images"][2] = dict(data["images"][2], file_name="gone.png")
    _expect_error(
        write_json(tmp_path / "m.json", data), coco_file[1], "m.json", "gone.png", "image id 3"
    )


def test_bad_polygon(coco_file, tmp_path):
    data = coco_dict()
    data["annotations"][1] = dict(data["annotations"][1], segmentation=[[1, 2, 3, 4]])
    _expect_error(write_json(tmp_path / "p.json", data), coco_file[1], "p.json", "annotation id 2")


# ---------------------------------------------------------------- rules of README "What is checked"


def _with_ann(tmp_path, name, index=0, **fields):
    data = coco_dict()
    data["annotations"][index] = dict(data["annotations"][index], **fields)
    return write_json(tmp_path / name, data)


@pytest.mark.parametrize(
    "bbox",
    [[1, 2, 3], [1, 2, 3, 4, 5], ["1", 2, 3, 4], [1, 2, None, 4], "1 2 3 4", [1, 2, True, 4]],
)
def test_malformed_bbox_is_an_error_naming_file_id_and_key(coco_file, tmp_path, bbox):
    path = _with_ann(tmp_path, "b.json", index=1, bbox=bbox)
    _expect_error(path, coco_file[1], "b.json", "annotation id 2", "'bbox'", "4 numbers")


@pytest.mark.parametrize(
    "bbox",
    [
        [2, 2, float("nan"), 10],
        [float("inf"), 2, 10, 10],
        [2, 2, 0, 10],
        [2, 2, 10, -3],
        [2, 2, 10**400, 10],  # an int beyond float range is not finite
    ],
)
def test_invalid_box_is_dropped_and_reported(coco_file, tmp_path, bbox, caplog):
    from longtail_d2.data.lvis_json import load_report

    path = _with_ann(tmp_path, "nan.json", index=1, bbox=bbox)
    loaded = load_longtail_json(path, coco_file[1])
    # annotation 2 (image 1, cat 10) is gone from training and evaluation ground truth
    assert sorted(a["id"] for a in loaded.lvis_gt["annotations"]) == [1, 3, 4, 6, 7, 8]
    record = next(r for r in loaded.dataset_dicts if r["image_id"] == 1)
    assert len(record["annotations"]) == 2
    assert loaded.report.invalid_box_ids == [2]
    assert load_report(path).invalid_box_ids == [2]
    assert "1 annotation(s) with a non-finite or non-positive-size 'bbox' dropped (ids 2)" in (
        caplog.text
    )


@pytest.mark.parametrize("ids", [[0, 2, 3, 4, 5, 6, 7, 8], [1, 1, 3, 4, 5, 6, 6, 8]])
def test_zero_or_duplicate_annotation_ids_are_renumbered(coco_file, tmp_path, ids, caplog):
    data = coco_dict()
    for ann, i in zip(data["annotations"], ids):
        ann["id"] = i
    loaded = load_longtail_json(write_json(tmp_path / "ids.json", data), coco_file[1])
    gt_ids = [a["id"] for a in loaded.lvis_gt["annotations"]]
    assert gt_ids == list(range(1, 8))  # 7 non-crowd annotations, ids 1..7
    assert loaded.report.renumbered
    assert "renumbered 1..7" in caplog.text


def test_valid_ids_are_kept_and_no_warning(coco_file, caplog):
    loaded = load_longtail_json(*coco_file)
    assert not loaded.report.renumbered and loaded.report.invalid_box_ids == []
    assert loaded.report.num_crowd == 1
    assert "renumbered" not in caplog.text


def test_zero_and_duplicate_ids_no_longer_lower_ap(coco_file, tmp_path):
    """Perfect detections score 100 AP once the ids are renumbered (id 0 and repeated ids made
    faster-coco-eval score them 94.9 and 8.9 on the issue's cases)."""
    from longtail_d2.evaluation import evaluate_lvis

    for ids in ([0, 2, 3, 4, 5, 6, 7, 8], [5] * 8):
        data = coco_dict()
        for ann, i in zip(data["annotations"], ids):
            ann["id"] = i
        gt = load_longtail_json(write_json(tmp_path / "z.json", data), coco_file[1]).lvis_gt
        dets = [
            {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 1.0}
            for a in gt["annotations"]
        ]
        metrics, _ = evaluate_lvis(gt, dets, "bbox")
        assert metrics["AP"] == pytest.approx(100.0), ids


def test_unknown_negative_category_is_an_error(coco_file, tmp_path):
    data = coco_dict()
    data["images"][1] = dict(data["images"][1], neg_category_ids=[20, 99])
    path = write_json(tmp_path / "neg.json", data)
    _expect_error(path, coco_file[1], "neg.json", "image id 2", "'neg_category_ids'", "99")
    data = coco_dict()
    data["images"][0] = dict(data["images"][0], not_exhaustive_category_ids=[7])
    path = write_json(tmp_path / "ne.json", data)
    _expect_error(path, coco_file[1], "image id 1", "'not_exhaustive_category_ids'", "7")


@pytest.mark.parametrize("value", [0, -5, "32", 3.5])
def test_image_size_must_be_a_positive_integer(coco_file, tmp_path, value):
    data = coco_dict()
    data["images"][3] = dict(data["images"][3], height=value)
    path = write_json(tmp_path / "hw.json", data)
    _expect_error(path, coco_file[1], "hw.json", "image id 4", "'height'")


@pytest.mark.parametrize(
    "segm, fragment",
    [
        ([[1, 2, 3, 4, 5, "x"]], "not a finite number"),
        ([[1, 2, 3, 4, 5, float("nan")]], "not a finite number"),
        ([[1, 2, 3, 4, 5, True]], "not a finite number"),  # a bool is not a coordinate
        ([[1, 2, 3, 4, 5, 10**400]], "not a finite number"),  # beyond float range
        ([[1, 2, 3, 4, 5, 6], [1, 2]], "fewer than 3 points"),
        ([[1, 2, 3, 4, 5, 6], "xy"], "fewer than 3 points"),
        ([], "fewer than 3 points"),
        ({"counts": "abc", "size": [16, 16]}, "RLE size [16, 16]"),
        ("polygon", "malformed"),
    ],
)
def test_malformed_segmentation(coco_file, tmp_path, segm, fragment):
    path = _with_ann(tmp_path, "s.json", index=3, segmentation=segm)
    _expect_error(path, coco_file[1], "s.json", "annotation id 4", "'segmentation'", fragment)
