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
