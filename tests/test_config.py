import glob
import math
import os

import pytest
import yaml
from detectron2.config import get_cfg

from longtail_d2.config import PCB_RENAMED_KEYS, add_longtail_config
from longtail_d2.engine import ConfigError, load_config
from tests.conftest import REPO


def test_keys_and_defaults():
    cfg = add_longtail_config(get_cfg())
    assert cfg.DATASETS.CUSTOM == []
    assert cfg.DATASETS.SYNTHETIC.ROOT == ""
    assert cfg.DATASETS.SYNTHETIC.NUM_CLASSES == 30
    assert cfg.TEST.LVIS_MAX_DETS_PER_IMAGE == 300


def test_misspelled_key_is_an_error():
    with pytest.raises(ConfigError, match="DATASETS.CUSTOMS"):
        load_config("", ["DATASETS.CUSTOMS", "[]"])


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="DATASETS.SYNTHETIC.SEED"):
        load_config("", ["DATASETS.SYNTHETIC.SEED", "seven"])


def test_misspelled_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("SOLVER:\n  MAX_ITR: 5\n")
    with pytest.raises(ConfigError, match="bad.yaml.*SOLVER.MAX_ITR"):
        load_config(str(path))


def test_amp_needs_gpu():
    with pytest.raises(ConfigError, match="SOLVER.AMP.ENABLED"):
        load_config("", ["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "True"])


@pytest.mark.parametrize("old,new", sorted(PCB_RENAMED_KEYS.items()))
def test_renamed_pcb_keys_name_the_new_key(old, new, tmp_path):
    """PCB's *_ITER keys count passes of the box head: the old names fail in one line that
    gives the new one, on the command line and in a file."""
    with pytest.raises(ConfigError) as info:
        load_config("", [old, "[0.2, 0.2, 0.6]" if "WEIGHTS" in old else "2"])
    message = str(info.value)
    assert "\n" not in message and f"{old} was renamed to {new}" in message
    leaf = old.split(".")[-1]
    path = tmp_path / "old.yaml"
    path.write_text(f"MODEL:\n  ROI_BOX_HEAD:\n    PCB:\n      {leaf}: 2\n")
    with pytest.raises(ConfigError, match=f"old.yaml.*renamed to {new}"):
        load_config(str(path))


YAMLS = sorted(
    glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
    + glob.glob(os.path.join(REPO, "projects", "**", "*.yaml"), recursive=True)
)
IDS = [os.path.relpath(p, REPO) for p in YAMLS]
# Bases hold a dataset's or model's invariants on purpose (and Base-RCNN-FPN is detectron2's).
LEAVES = [p for p in YAMLS if not os.path.basename(p).startswith("Base-")]


@pytest.mark.parametrize("path", YAMLS, ids=IDS)
def test_every_yaml_loads(path):
    cfg = load_config(path)
    if "mask_rcnn" in os.path.basename(path) and "lvis" not in path.lower():
        # The tiny CPU settings: lr 0.01 for 4 images (the instant tests: 0.005 for 2).
        assert cfg.SOLVER.BASE_LR / cfg.SOLVER.IMS_PER_BATCH == pytest.approx(0.01 / 4, rel=1e-9)
    if "_rfs" in os.path.basename(path):
        assert cfg.DATALOADER.SAMPLER_TRAIN == "RepeatFactorTrainingSampler"
        if "lvis" in path.lower():
            # 1e-3 (LVIS paper, detectron2, mmdet) or EQL / DropLoss's 5e-4.
            assert cfg.DATALOADER.REPEAT_THRESHOLD in (0.001, 0.0005)


def _flat(d, prefix=""):
    for key, value in d.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _get(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return tuple(cfg) if isinstance(cfg, list) else cfg


def restated_keys(path):
    """Keys of a YAML leaf whose value equals what its _BASE_ chain and the defaults give."""
    with open(path) as f:
        raw = yaml.safe_load(f)
    base = add_longtail_config(get_cfg())
    if "_BASE_" in raw:
        base.merge_from_file(os.path.join(os.path.dirname(path), raw["_BASE_"]))
    merged = base.clone()
    merged.merge_from_file(path)
    keys = _flat({k: v for k, v in raw.items() if k != "_BASE_"})
    return [k for k in keys if _get(merged, k) == _get(base, k)]


@pytest.mark.parametrize("path", LEAVES, ids=[os.path.relpath(p, REPO) for p in LEAVES])
def test_leaves_hold_only_differences(path):
    """A restated default would not follow a change of the default."""
    assert restated_keys(path) == []


def test_restated_key_is_detected(tmp_path):
    leaf = tmp_path / "leaf.yaml"
    base = os.path.join(REPO, "configs", "Tiny", "mask_rcnn_R_18_FPN_instant.yaml")
    leaf.write_text(
        f'_BASE_: "{base}"\nMODEL:\n  ROI_BOX_HEAD:\n'
        '    PRIOR_PROB: 0.001\n    CLS_LOSS: "EQLLoss"\n'
        "SOLVER:\n  MAX_ITER: 10\n  BASE_LR: 0.001\n"
    )
    assert restated_keys(str(leaf)) == ["MODEL.ROI_BOX_HEAD.PRIOR_PROB", "SOLVER.MAX_ITER"]


# Annotated training images (METHODS.md section 11): the epoch length of the mmdet schedules.
LVIS_TRAIN_IMAGES = {"lvis_v0.5_train": 56740, "lvis_v1_train": 99388}
LVIS_NUM_CLASSES = {"lvis_v0.5_train": 1230, "lvis_v1_train": 1203}


def _epochs(epochs, steps):
    """mmdet's epoch schedule at 16 images per iteration (8 GPUs x 2), rounded half up."""

    def iters(train, e):
        return math.floor(e * LVIS_TRAIN_IMAGES[train] / 16 + 0.5)

    return lambda train: (iters(train, epochs), tuple(iters(train, s) for s in steps))


def _detectron2(length):
    """detectron2's LVIS schedules: 1x = 90k (v0.5) / 180k (v1) iterations, steps at 2/3, 8/9."""

    def schedule(train):
        base = {"lvis_v0.5_train": 90000, "lvis_v1_train": 180000}[train] * length
        return base, (base * 2 // 3, base * 8 // 9)

    return schedule


# The papers' schedules (METHODS.md "(d)" sections), all at lr 0.02 for 16 images.
SCHEDULES = {
    ("Baseline", "1x"): _detectron2(1),
    ("Baseline", "2x"): _detectron2(2),
    ("EQL", "1x"): _detectron2(1),
    ("DropLoss", "1x"): _detectron2(1),
    ("BalancedSoftmax", "1x"): _detectron2(1),
    ("Federated", "1x"): _detectron2(1),
    ("BALMS", "1x"): _detectron2(1),  # stage 1
    ("BALMS", "decoupled"): lambda train: (22000, (11000, 18000)),  # stage 2
    ("EQLv2", "1x", "lvis_v1_train"): _epochs(12, (8, 11)),
    ("EQLv2", "1x", "lvis_v0.5_train"): _detectron2(1),  # no mmdet v0.5 run: detectron2's 1x
    ("Seesaw", "2x"): _epochs(24, (16, 22)),
    ("PCB", "2x"): _epochs(24, (16, 22)),
    ("FASA", "2x"): _epochs(24, (16, 22)),
    ("configs", "1x"): _detectron2(1),
    ("configs", "2x"): _detectron2(2),
}

LVIS_LEAVES = [p for p in LEAVES if "lvis" in p.lower()]


def _schedule_of(path, train):
    rel = os.path.relpath(path, REPO).split(os.sep)
    owner = rel[1] if rel[0] == "projects" else "configs"
    name = os.path.basename(path)
    tag = "decoupled" if "decoupled" in name else "2x" if "_2x" in name else "1x"
    assert "_1x" in name or "_2x" in name or tag == "decoupled", f"{name}: no schedule in name"
    return SCHEDULES.get((owner, tag, train)) or SCHEDULES[(owner, tag)]


@pytest.mark.parametrize("path", LVIS_LEAVES, ids=[os.path.relpath(p, REPO) for p in LVIS_LEAVES])
def test_lvis_leaves_follow_their_papers_schedule(path):
    cfg = load_config(path)
    (train,) = cfg.DATASETS.TRAIN
    assert train in LVIS_TRAIN_IMAGES, train
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == LVIS_NUM_CLASSES[train]
    assert all(name.startswith(train.rsplit("_", 1)[0]) for name in cfg.DATASETS.TEST)
    max_iter, steps = _schedule_of(path, train)(train)
    assert (cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS)) == (max_iter, steps)
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.IMS_PER_BATCH) == (0.02, 16)
    # Score threshold 1e-4 (LVIS paper), 0.02 in the federated-loss configs (METHODS.md 11.7).
    federated = os.sep + "Federated" + os.sep in path
    assert cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST == (0.02 if federated else 1e-4)
    assert cfg.TEST.LVIS_MAX_DETS_PER_IMAGE == 300


def test_every_lvis_version_and_method_is_covered():
    assert len(LVIS_LEAVES) >= 56
    trains = {tuple(load_config(p).DATASETS.TRAIN) for p in LVIS_LEAVES}
    assert trains == {("lvis_v0.5_train",), ("lvis_v1_train",)}
