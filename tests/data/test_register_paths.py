"""Where DATASETS.CUSTOM paths point: as given when absolute or when they exist from the working
directory (``./data/x.json``), else under $DETECTRON2_DATASETS."""

import os

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from longtail_d2.config import add_longtail_config
from longtail_d2.data import register_datasets_from_config
from tests.conftest import write_json
from tests.data.small_dataset import coco_dict, write_images


def _register(name, json_file, image_root):
    cfg = get_cfg()
    add_longtail_config(cfg)
    cfg.DATASETS.CUSTOM = [[name, json_file, image_root]]
    cfg.DATASETS.TRAIN = (name,)
    cfg.DATASETS.TEST = ()
    register_datasets_from_config(cfg)
    return MetadataCatalog.get(name)


def test_relative_path_that_exists_from_the_working_directory_is_used_as_given(
    tmp_path, monkeypatch
):
    # $DETECTRON2_DATASETS points elsewhere (and holds nothing): before the fix this was a
    # "annotation file not found" error naming <root>/./data/x.json.
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "elsewhere"))
    work = tmp_path / "work"
    write_images(work / "data" / "images")
    write_json(work / "data" / "x.json", coco_dict())
    monkeypatch.chdir(work)
    meta = _register("rp_cwd", "./data/x.json", "./data/images")
    assert meta.json_file == "./data/x.json"
    assert meta.image_root == "./data/images"
    dicts = DatasetCatalog.get("rp_cwd")
    assert len(dicts) == 5
    assert all(os.path.isfile(d["file_name"]) for d in dicts)


def test_relative_path_absent_from_the_working_directory_is_under_detectron2_datasets(
    tmp_path, monkeypatch
):
    root = tmp_path / "root"
    write_images(root / "mydata" / "images")
    write_json(root / "mydata" / "x.json", coco_dict())
    monkeypatch.setenv("DETECTRON2_DATASETS", str(root))
    monkeypatch.chdir(tmp_path)  # no ./mydata here
    meta = _register("rp_root", "mydata/x.json", "mydata/images")
    assert meta.json_file == os.path.join(str(root), "mydata/x.json")
    assert meta.image_root == os.path.join(str(root), "mydata/images")
    assert len(DatasetCatalog.get("rp_root")) == 5
