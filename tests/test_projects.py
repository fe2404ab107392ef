"""Every method's instant-test config trains and evaluates through train_net.py."""

import glob
import os

import pytest

from tests.conftest import REPO, read_metrics, run_train_net

# BALMS's stage 2 needs a stage-1 checkpoint: tests/engine/test_balms.py runs the two stages.
ALL_INSTANT = sorted(glob.glob(os.path.join(REPO, "projects", "*", "configs", "*_instant*.yaml")))
INSTANT = [p for p in ALL_INSTANT if "decoupled" not in p]
DECOUPLED = [p for p in ALL_INSTANT if "decoupled" in p]


@pytest.mark.parametrize("config", INSTANT, ids=[os.path.basename(p) for p in INSTANT])
def test_instant_config_trains_and_evaluates(config, tmp_path, datasets_root):
    out = str(tmp_path / "out")
    proc = run_train_net("--config-file", config, "SOLVER.MAX_ITER", "4", "OUTPUT_DIR", out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = read_metrics(out)
    assert {"bbox/AP", "segm/AP", "segm/APr", "segm/APc", "segm/APf"} <= set(metrics)


METHODS = sorted(
    os.path.basename(os.path.dirname(d)) for d in glob.glob(os.path.join(REPO, "projects", "*", ""))
)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_has_an_instant_config_and_readme(method):
    assert os.path.isfile(os.path.join(REPO, "projects", method, "README.md")), method
    assert glob.glob(os.path.join(REPO, "projects", method, "configs", "*_instant*.yaml")), method


def test_every_registered_loss_and_head_has_an_instant_config():
    """A loss or ROI head added to the registries without a project instant config fails here
    (registry aliases count as their class)."""
    from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY

    from longtail_d2.engine import load_config
    from longtail_d2.modeling.losses import LONGTAIL_LOSS_REGISTRY

    assert {"Baseline", "EQL", "DropLoss", "EQLv2", "Seesaw", "BALMS", "PCB", "FASA"} <= set(
        METHODS
    )
    configs = [load_config(p) for p in INSTANT + DECOUPLED]
    used_losses = {LONGTAIL_LOSS_REGISTRY.get(c.MODEL.ROI_BOX_HEAD.CLS_LOSS) for c in configs}
    used_heads = {ROI_HEADS_REGISTRY.get(c.MODEL.ROI_HEADS.NAME) for c in configs}
    assert {cls for _, cls in LONGTAIL_LOSS_REGISTRY} <= used_losses
    ours = {cls for _, cls in ROI_HEADS_REGISTRY if cls.__module__.startswith("longtail_d2.")}
    assert ours <= used_heads


def test_loss_sampler_and_cascade_combine_by_config(tmp_path, datasets_root):
    """EQL + repeat-factor sampling + cascade heads, from command-line overrides only."""
    out = str(tmp_path / "combo")
    config = os.path.join(REPO, "projects", "EQL", "configs", "eql_mask_rcnn_R_18_FPN_instant.yaml")
    proc = run_train_net(
        "--config-file", config, "SOLVER.MAX_ITER", "3", "OUTPUT_DIR", out,
        "DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler",
        "DATALOADER.REPEAT_THRESHOLD", "0.5",
        "MODEL.ROI_HEADS.NAME", "LongTailCascadeROIHeads",
        "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "True",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = open(os.path.join(out, "log.txt")).read()
    assert "using training sampler RepeatFactorTrainingSampler" in log
    assert "loss_cls_stage2" in log
    assert "segm/APr" in read_metrics(out)
