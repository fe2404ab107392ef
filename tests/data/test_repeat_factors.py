import math

import torch
from detectron2.data.samplers import RepeatFactorTrainingSampler

from longtail_d2.data import load_longtail_json, rfs_repeat_factors
from tests.conftest import write_json
from tests.data.small_dataset import coco_dict, write_images


def lvis_repeat_factors(image_categories, t):
    """LVIS paper, App. B.2, written independently of detectron2:
    f(c) = fraction of images containing c, r(c) = max(1, sqrt(t / f(c))),
    r(I) = max over the categories of I of r(c)."""
    n = len(image_categories)
    cats = {c for cs in image_categories for c in cs}
    f = {c: sum(c in cs for cs in image_categories) / n for c in cats}
    return [max(max(1.0, math.sqrt(t / f[c])) for c in cs) for cs in image_categories]


def test_repeat_factors_on_custom_dataset_match_lvis_formula(tmp_path):
    images = write_images(tmp_path / "images")
    loaded = load_longtail_json(write_json(tmp_path / "c.json", coco_dict()), images)
    dicts = [d for d in loaded.dataset_dicts if d["annotations"]]  # FILTER_EMPTY_ANNOTATIONS
    t = 0.8
    factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(dicts, t)
    # By hand: 4 images; f = 3/4, 2/4, 1/4 for contiguous 0, 1, 2 -> r = 1.033, 1.265, 1.789.
    # Images: {0,1} -> 1.265, {0} -> 1.033, {1} -> 1.265, {0,2} -> 1.789.
    expected = [math.sqrt(0.8 / 0.5), math.sqrt(0.8 / 0.75), math.sqrt(0.8 / 0.5), math.sqrt(3.2)]
    torch.testing.assert_close(factors, torch.tensor(expected), rtol=1e-6, atol=1e-6)
    cats = [{a["category_id"] for a in d["annotations"]} for d in dicts]
    torch.testing.assert_close(factors, torch.tensor(lvis_repeat_factors(cats, t)))
    # The class-statistics counter gives the same factors.
    torch.testing.assert_close(rfs_repeat_factors(dicts, t), torch.tensor(expected))


def test_statistics_counter_matches_detectron2_on_any_input():
    """rfs_repeat_factors (longtail_d2's one counter) against detectron2's own, with repeated
    classes in an image, an image without annotations, both sqrt modes and several t."""
    g = torch.Generator().manual_seed(0)
    sizes = torch.randint(0, 5, (60,), generator=g).tolist()
    labels = [torch.randint(0, 7, (n,), generator=g).tolist() for n in sizes]
    dicts = [{"annotations": [{"category_id": c} for c in cs]} for cs in labels]
    assert any(not d["annotations"] for d in dicts)
    for t in (0.01, 0.1, 0.5):
        for sqrt in (True, False):
            ours = rfs_repeat_factors(dicts, t, sqrt=sqrt)
            theirs = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
                dicts, t, sqrt=sqrt
            )
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_repeat_factor_is_one_below_min_frequency(tmp_path):
    images = write_images(tmp_path / "images")
    loaded = load_longtail_json(write_json(tmp_path / "c.json", coco_dict()), images)
    dicts = [d for d in loaded.dataset_dicts if d["annotations"]]
    factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(dicts, 0.25)
    assert torch.all(factors == 1.0)


def test_stochastic_rounding_expectation():
    factors = torch.tensor([1.0, 1.25, 2.5, 3.9])
    sampler = RepeatFactorTrainingSampler(factors, shuffle=False, seed=0)
    counts = torch.zeros(4)
    passes = 4000
    g = torch.Generator().manual_seed(0)
    for _ in range(passes):
        for i in sampler._get_epoch_indices(g):
            counts[i] += 1
    torch.testing.assert_close(counts / passes, factors, rtol=0.02, atol=0.02)


def test_config_builds_rfs_loader_on_custom_dataset(tmp_path, datasets_root):
    from detectron2.data.build import _train_loader_from_config

    from longtail_d2.data import register_datasets_from_config
    from longtail_d2.engine import load_config

    images = write_images(tmp_path / "images")
    train = write_json(tmp_path / "rfs.json", coco_dict())
    cfg = load_config(
        "",
        [
            "DATASETS.CUSTOM",
            f"[('rfs_train', '{train}', '{images}')]",
            "DATASETS.TRAIN",
            "('rfs_train',)",
            "DATALOADER.SAMPLER_TRAIN",
            "RepeatFactorTrainingSampler",
            "DATALOADER.REPEAT_THRESHOLD",
            "0.8",
            "DATALOADER.NUM_WORKERS",
            "0",
            "SOLVER.IMS_PER_BATCH",
            "2",
        ],
    )
    register_datasets_from_config(cfg)
    # What build_detection_train_loader(cfg) builds its loader from.
    sampler = _train_loader_from_config(cfg)["sampler"]
    assert isinstance(sampler, RepeatFactorTrainingSampler)
    rf = sampler._int_part + sampler._frac_part
    expected = [math.sqrt(0.8 / 0.5), math.sqrt(0.8 / 0.75), math.sqrt(0.8 / 0.5), math.sqrt(3.2)]
    torch.testing.assert_close(rf, torch.tensor(expected), rtol=1e-6, atol=1e-6)
