"""Image files checked against the annotation file: readable, complete, of the right size;
results cached by file size and mtime."""

import os

import pytest
from PIL import Image

from longtail_d2.data import DatasetError, load_longtail_json
from longtail_d2.data import image_check
from longtail_d2.data.image_check import check_image_files, image_check_cache_file, inspect_image
from tests.conftest import write_json
from tests.data.small_dataset import coco_dict, write_images


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = write_images(tmp_path / "images")
    json_file = write_json(tmp_path / "ann.json", coco_dict())
    return json_file, root, load_longtail_json(json_file, root).dataset_dicts


def _truncate(path, keep):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:keep])


def _expect(records, json_file, *fragments):
    with pytest.raises(DatasetError) as info:
        check_image_files(records, json_file)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_good_images_pass_and_are_cached(dataset, monkeypatch):
    json_file, _, records = dataset
    check_image_files(records, json_file)
    cache = image_check_cache_file(json_file)
    assert os.path.isfile(cache) and cache.startswith(os.environ["XDG_CACHE_HOME"])
    # A second check opens no image (instant start) ...
    calls = []
    monkeypatch.setattr(image_check, "inspect_image", lambda p: calls.append(p))
    check_image_files(records, json_file)
    assert calls == []


def test_a_changed_file_is_checked_again(dataset):
    json_file, root, records = dataset
    check_image_files(records, json_file)
    # ... but a file replaced after the first check (new size and mtime) is opened again.
    Image.new("RGB", (20, 32)).save(os.path.join(root, "img3.png"))
    _expect(records, json_file, "image id 3", "'width' x 'height' = 32 x 32", "20 x 32 pixels")


@pytest.mark.parametrize("keep", [0.05, 0.5])
def test_truncated_png_is_named(dataset, keep):
    json_file, root, records = dataset
    path = os.path.join(root, "img2.png")
    Image.effect_noise((32, 32), 50).convert("RGB").save(path)
    assert inspect_image(path) == (32, 32)
    size = os.path.getsize(path)
    _truncate(path, int(size * keep))
    _expect(records, json_file, "ann.json", "image id 2", "'file_name'", "img2.png", "truncated")


def test_png_without_only_its_end_chunk_decodes_and_passes(dataset):
    """The end marker is only a shortcut: a file without it is decoded in full, and one whose
    pixels are all there (as detectron2 reads it) is accepted."""
    json_file, root, records = dataset
    path = os.path.join(root, "img2.png")
    Image.effect_noise((32, 32), 50).convert("RGB").save(path)
    _truncate(path, os.path.getsize(path) - 12)  # the IEND chunk
    check_image_files(records, json_file)


def test_truncated_jpeg_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = str(tmp_path / "a.jpg")
    Image.effect_noise((64, 48), 50).convert("RGB").save(path, quality=95)
    assert inspect_image(path) == (64, 48)
    _truncate(path, os.path.getsize(path) // 2)
    with pytest.raises(OSError):
        inspect_image(path)
    records = [{"file_name": path, "image_id": 7, "width": 64, "height": 48}]
    _expect(records, str(tmp_path / "x.json"), "image id 7", "a.jpg", "truncated")


def test_not_an_image_and_missing_file(dataset):
    json_file, root, records = dataset
    with open(os.path.join(root, "img4.png"), "w") as f:
        f.write("not an image")
    os.remove(os.path.join(root, "img5.png"))
    message = _expect(records, json_file, "image id 4", "img4.png", "(and 1 more bad images)")
    assert "img5" not in message


def test_exif_rotation_swaps_the_size(tmp_path):
    path = str(tmp_path / "r.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: detectron2's read_image gives a 30 x 50 image
    Image.new("RGB", (50, 30)).save(path, exif=exif)
    assert inspect_image(path) == (30, 50)


def test_progress_lines(capsys):
    progress = image_check._Progress("ann.json", 20, min_items=10)
    for done in range(1, 21):
        progress.update(done)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("checking images of ann.json: 20/20 (100%")
    quiet = image_check._Progress("ann.json", 5, min_items=10)
    quiet.update(5)
    assert capsys.readouterr().err == ""


def test_named_error_mapper_names_file_and_id(dataset):
    """A file that breaks after the checks, met by the data loader's mapper."""
    from detectron2.data import DatasetMapper
    from detectron2.data import transforms as T

    from longtail_d2.data.named_errors import NamedErrorMapper

    json_file, root, records = dataset
    mapper = NamedErrorMapper(
        DatasetMapper(is_train=True, augmentations=[T.NoOpTransform()], image_format="BGR")
    )
    path = os.path.join(root, "img1.png")
    Image.effect_noise((32, 32), 50).convert("RGB").save(path)
    assert mapper(dict(records[0]))["image"].shape == (3, 32, 32)
    _truncate(path, os.path.getsize(path) // 2)
    with pytest.raises(DatasetError) as info:
        mapper(dict(records[0]))
    message = str(info.value)
    assert "image id 1" in message and "img1.png" in message and "\n" not in message


def test_bad_image_in_a_data_loader_worker_ends_in_one_named_line(dataset):
    """The DatasetError crosses torch's DataLoader worker boundary (which re-raises it with the
    worker's traceback in the message); train_net.py prints its last line only."""
    import importlib.util

    import torch
    from detectron2.data import DatasetMapper
    from detectron2.data import transforms as T

    from longtail_d2.data.named_errors import NamedErrorMapper
    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("train_net", os.path.join(REPO, "train_net.py"))
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)

    json_file, root, records = dataset
    path = os.path.join(root, "img3.png")
    Image.effect_noise((32, 32), 50).convert("RGB").save(path)
    _truncate(path, os.path.getsize(path) // 2)
    mapper = NamedErrorMapper(
        DatasetMapper(is_train=False, augmentations=[T.NoOpTransform()], image_format="BGR")
    )

    class Mapped(torch.utils.data.Dataset):
        def __len__(self):
            return len(records)

        def __getitem__(self, i):
            return mapper(dict(records[i]))

    loader = torch.utils.data.DataLoader(Mapped(), num_workers=1, collate_fn=lambda b: b)
    with pytest.raises(DatasetError) as info:
        list(loader)
    assert "Original Traceback" in str(info.value)  # torch's multi-line message
    line = train_net.one_line(info.value)
    assert line.startswith("error: image id 3: 'file_name' ") and "img3.png" in line
    assert "\n" not in line and "Traceback" not in line
