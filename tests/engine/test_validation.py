"""The run checks as functions (fast); tests/engine/test_bad_inputs.py runs them through
train_net.py."""

import glob
import os

import pytest

from longtail_d2.engine import load_config
from longtail_d2.engine.validation import (
    ConfigError,
    check_batch_size,
    check_config_values,
    check_device,
    check_output_dir,
)
from tests.conftest import INSTANT, REPO

CONFIGS = sorted(
    glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
    + glob.glob(os.path.join(REPO, "projects", "*", "configs", "*.yaml"))
)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_every_shipped_config_passes(config):
    """No false alarm: every config of the repository passes the value checks."""
    check_config_values(load_config(config))


def _cfg(*opts):
    return load_config(INSTANT, list(opts))


def test_box_head_name_is_checked_unless_the_heads_are_res5_heads():
    """The C4 heads (detectron2's default Res5ROIHeads, and any subclass registered under
    another name) have no ROI_BOX_HEAD: its name is not checked; other heads need a known one."""
    from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads

    name = "_TestRes5SubclassHeads"
    if name not in ROI_HEADS_REGISTRY:
        ROI_HEADS_REGISTRY.register(type(name, (Res5ROIHeads,), {}))
    check_config_values(load_config("", []))  # detectron2's defaults: Res5ROIHeads, box head ""
    check_config_values(_cfg("MODEL.ROI_HEADS.NAME", name, "MODEL.ROI_BOX_HEAD.NAME", ""))
    with pytest.raises(ConfigError, match="MODEL.ROI_BOX_HEAD.NAME = '' is not a known box head"):
        check_config_values(
            _cfg("MODEL.ROI_HEADS.NAME", "StandardROIHeads", "MODEL.ROI_BOX_HEAD.NAME", "")
        )


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0"])
def test_devices_accepted(device):
    check_device(device)


@pytest.mark.parametrize("device", ["foo", "gpu", "cuda0", "cuda:", "CPU", "cuda:0:1"])
def test_devices_rejected(device):
    with pytest.raises(ConfigError, match="MODEL.DEVICE"):
        check_device(device)


@pytest.mark.parametrize("steps", ["(4, 4)", "(0, 5)", "(-1,)", "(6, 3)"])
def test_bad_steps(steps):
    with pytest.raises(ConfigError, match=r"SOLVER.STEPS = .*strictly increasing"):
        _cfg("SOLVER.STEPS", steps)


def test_steps_past_max_iter_are_allowed_but_not_equal():
    assert tuple(_cfg("SOLVER.STEPS", "(4, 12)").SOLVER.STEPS) == (4, 12)
    with pytest.raises(ConfigError, match="contains SOLVER.MAX_ITER = 10"):
        _cfg("SOLVER.STEPS", "(4, 10)")


@pytest.mark.parametrize(
    "key, value",
    [("SOLVER.BASE_LR", float("nan")), ("SOLVER.BASE_LR", -0.1), ("SOLVER.IMS_PER_BATCH", 0),
     ("DATALOADER.REPEAT_THRESHOLD", float("inf")), ("DATALOADER.NUM_WORKERS", -1),
     ("MODEL.ROI_HEADS.NUM_CLASSES", 0), ("SOLVER.WARMUP_ITERS", -2),
     ("TEST.EVALUATOR", "cocoo"), ("TEST.DETS_PER_CATEGORY", -1),
     ("DATASETS.FREQUENCY_GROUP_THRESHOLDS", (100, 10)),
     ("DATASETS.FREQUENCY_GROUP_THRESHOLDS", (10,))],
)
def test_ranges(key, value):
    """Set directly: NaN and infinity come from YAML (.nan, .inf), not the command line."""
    cfg = _cfg()
    cfg.defrost()
    node, leaf = cfg, key.split(".")
    for part in leaf[:-1]:
        node = node[part]
    node[leaf[-1]] = value
    with pytest.raises(ConfigError, match=f"{key} = "):
        check_config_values(cfg)


@pytest.mark.parametrize(
    "batch, reference, workers, ok",
    [(4, 0, 2, True), (3, 0, 2, False), (16, 8, 3, True), (4, 8, 3, False), (8, 0, 1, True)],
)
def test_batch_per_worker(batch, reference, workers, ok):
    """detectron2's auto_scale_workers: IMS_PER_BATCH x workers / REFERENCE_WORLD_SIZE."""
    cfg = _cfg("SOLVER.IMS_PER_BATCH", str(batch), "SOLVER.REFERENCE_WORLD_SIZE", str(reference))
    if ok:
        check_batch_size(cfg, workers)
    else:
        with pytest.raises(ConfigError, match=f"not divisible by the {workers} workers"):
            check_batch_size(cfg, workers)


@pytest.fixture
def finished(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model_final.pth").write_bytes(b"")
    return str(out)


def test_finished_run_refused_unless_opted_in(finished):
    with pytest.raises(ConfigError, match="finished run"):
        check_output_dir(_cfg("OUTPUT_DIR", finished), eval_only=False, resume=False)
    check_output_dir(_cfg("OUTPUT_DIR", finished, "OUTPUT_DIR_OVERWRITE", "True"), False, False)
    check_output_dir(_cfg("OUTPUT_DIR", finished), eval_only=True, resume=False)
    check_output_dir(_cfg("OUTPUT_DIR", finished), eval_only=False, resume=True)


def test_empty_or_log_only_output_dir_is_fine(tmp_path):
    (tmp_path / "log.txt").write_text("x")
    (tmp_path / "inference").mkdir()
    check_output_dir(_cfg("OUTPUT_DIR", str(tmp_path)), eval_only=False, resume=False)
    deep = tmp_path / "a" / "b" / "c"
    check_output_dir(_cfg("OUTPUT_DIR", str(deep)), eval_only=False, resume=False)
    assert not (tmp_path / "a").exists()  # checked, not created
