"""Every method's instant-test config trains and evaluates through train_net.py."""

import glob
import os

import pytest

from tests.conftest import REPO, read_metrics, run_train_net

# BALMS's stage 2 needs a stage-1 checkpoint: tests/engine/test_balms.py runs the two stages.
INSTANT = sorted(
    p
    for p in glob.glob(os.path.join(REPO, "projects", "*", "configs", "*_instant*.yaml"))
    if "decoupled" not in p
)


@pytest.mark.parametrize("config", INSTANT, ids=[os.path.basename(p) for p in INSTANT])
def test_instant_config_trains_and_evaluates(config, tmp_path, datasets_root):
    out = str(tmp_path / "out")
    proc = run_train_net("--config-file", config, "SOLVER.MAX_ITER", "4", "OUTPUT_DIR", out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = read_metrics(out)
    assert {"bbox/AP", "segm/AP", "segm/APr", "segm/APc", "segm/APf"} <= set(metrics)


def test_every_method_has_an_instant_config_and_readme():
    methods = {
        "Baseline",
        "EQL",
        "DropLoss",
        "EQLv2",
        "Seesaw",
        "BalancedSoftmax",
        "Federated",
        "BALMS",
    }
    for method in methods:
        assert os.path.isfile(os.path.join(REPO, "projects", method, "README.md")), method
        assert glob.glob(
            os.path.join(REPO, "projects", method, "configs", "*_instant*.yaml")
        ), method


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
    assert "Using training sampler RepeatFactorTrainingSampler" in log
    assert "loss_cls_stage2" in log
    assert "segm/APr" in read_metrics(out)
