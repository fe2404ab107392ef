"""tools/loss_gradients.py and longtail_d2.evaluation.loss_gradients: gradient masses per
frequency group equal hand-computed BCE gradients; EQL / DropLoss remove exactly the negatives
they are defined to remove; the tool on the instant config writes every group and loss; bad
input is one line with exit code 2, before anything is written."""

import json
import math
import os
import runpy
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from longtail_d2.evaluation.loss_gradients import (
    GROUPS,
    bce_logit_gradients,
    gradient_masses,
    group_index,
    group_report,
    logit_gradients,
)
from longtail_d2.modeling.losses import DropLoss, EQLLoss, SigmoidCELoss
from tests.conftest import INSTANT, REPO

TOOL = os.path.join(REPO, "tools", "loss_gradients.py")
EQLV2 = os.path.join(REPO, "projects", "EQLv2", "configs", "eqlv2_mask_rcnn_R_18_FPN_instant.yaml")
# The instant config with longtail_d2's heads and a sigmoid classifier (C logits per RoI).
SIGMOID = [
    "MODEL.DEVICE", "cpu",
    "MODEL.ROI_HEADS.NAME", "LongTailROIHeads",
    "MODEL.ROI_BOX_HEAD.CLS_LOSS", "SigmoidCELoss",
]  # fmt: skip

# C = 3 classes, one per group: 0 rare, 1 common, 2 frequent. R = 4 RoIs: RoI 0 of class 0,
# RoI 1 of class 2, RoIs 2 and 3 background (label 3).
FREQUENCY = ["r", "c", "f"]
LOGITS = torch.tensor(
    [[0.5, -1.0, 2.0], [-2.0, 0.3, 1.5], [1.0, -0.5, -3.0], [0.0, 2.5, -1.2]],
    dtype=torch.float64,
)
GT = torch.tensor([0, 2, 3, 3])
TAIL = torch.tensor([True, True, False])  # EQL's default tail set: rare + common


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def _hand_bce_masses():
    """(3, 3) [positive, neg_fg, neg_bg] x [r, c, f] of |d BCE / d z| = |sigma(z) - y| / R,
    written out term by term from the table above."""
    z = LOGITS.tolist()
    g = [[_sigmoid(v) / 4 for v in row] for row in z]  # negatives: sigma(z) / R
    pos_r = (1 - _sigmoid(z[0][0])) / 4  # RoI 0, class 0
    pos_f = (1 - _sigmoid(z[1][2])) / 4  # RoI 1, class 2
    return [
        [pos_r, 0.0, pos_f],  # no RoI of class 1
        [g[1][0], g[0][1] + g[1][1], g[0][2]],  # the other foreground RoI's class columns
        [g[2][0] + g[3][0], g[2][1] + g[3][1], g[2][2] + g[3][2]],
    ]


def _masses(loss):
    return gradient_masses(logit_gradients(loss, LOGITS, GT), GT, group_index(FREQUENCY))


def test_bce_masses_by_hand():
    groups = group_index(FREQUENCY)
    hand = torch.tensor(_hand_bce_masses(), dtype=torch.float64)
    bce = gradient_masses(bce_logit_gradients(LOGITS, GT, 3), GT, groups)
    assert torch.allclose(bce, hand, rtol=1e-12, atol=0)
    # longtail_d2's SigmoidCELoss kernel gives torch's BCE gradient on the same logits.
    assert torch.allclose(_masses(SigmoidCELoss(num_classes=3)), hand, rtol=1e-12, atol=0)
    report = group_report(_masses(SigmoidCELoss(num_classes=3)), bce)
    for group in GROUPS:
        assert report[group]["removed_bg"] == pytest.approx(0, abs=1e-12)
    assert report["r"]["removed_fg"] == pytest.approx(0, abs=1e-12)
    assert report["c"]["removed_fg"] == pytest.approx(0, abs=1e-12)
    pos, neg_fg, neg_bg = hand[:, 0].tolist()
    assert report["r"]["neg_over_pos"] == pytest.approx((neg_fg + neg_bg) / pos, rel=1e-12)
    assert report["c"]["neg_over_pos"] is None  # no positive RoI of class 1: no value


def test_bce_gradient_matches_torch_per_element():
    target = F.one_hot(GT, 4)[:, :3].double()
    z = LOGITS.clone().requires_grad_(True)
    (F.binary_cross_entropy_with_logits(z, target, reduction="sum") / 4).backward()
    assert torch.allclose(logit_gradients(SigmoidCELoss(num_classes=3), LOGITS, GT), z.grad)


def test_eql_removes_tail_negatives_of_foreground_only():
    groups = group_index(FREQUENCY)
    bce = gradient_masses(bce_logit_gradients(LOGITS, GT, 3), GT, groups)
    report = group_report(_masses(EQLLoss(num_classes=3, tail_mask=TAIL)), bce)
    # Tail classes (r, c): every negative from a foreground RoI is gone, background kept.
    assert report["r"]["removed_fg"] == 1 and report["c"]["removed_fg"] == 1
    assert report["f"]["removed_fg"] == pytest.approx(0, abs=1e-12)
    for group in GROUPS:
        assert report[group]["removed_bg"] == pytest.approx(0, abs=1e-12)
        # Positives are never touched.
        assert report[group]["positive"] == pytest.approx(float(bce[0, GROUPS.index(group)]))


def test_droploss_drops_tail_background_negatives_with_rho():
    groups = group_index(FREQUENCY)
    # The only foreground RoI is of the frequent class 2: rho = 0, so DropLoss drops every
    # background negative of the tail classes (and EQL's foreground ones).
    gt = torch.tensor([2, 3, 3, 3])
    bce = gradient_masses(bce_logit_gradients(LOGITS, gt, 3), gt, groups)
    loss = DropLoss(num_classes=3, tail_mask=TAIL)
    grad = logit_gradients(loss, LOGITS, gt)
    report = group_report(gradient_masses(grad, gt, groups), bce)
    assert loss.last_ratio == 0
    assert report["r"]["removed_bg"] == 1 and report["c"]["removed_bg"] == 1
    assert report["r"]["removed_fg"] == 1 and report["c"]["removed_fg"] == 1
    assert report["f"]["removed_bg"] == pytest.approx(0, abs=1e-12)


def run_tool(*args, timeout=600):
    return subprocess.run(
        [sys.executable, TOOL, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )


def _reject_constant(name):
    raise ValueError(f"loss_gradients.json holds {name}: not strict JSON")


def test_tool_on_instant_config(datasets_root, tmp_path):
    out = tmp_path / "out"
    losses = ["SigmoidCELoss", "EQLLoss", "DropLoss"]
    proc = run_tool(
        "--config-file", INSTANT, "--weights", "", "--batches", "2", "--output", str(out),
        "--losses", *losses, *SIGMOID,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(out / "loss_gradients.json") as f:
        result = json.load(f, parse_constant=_reject_constant)
    assert (out / "loss_gradients.md").read_text().count("| EQLLoss ") == len(GROUPS)
    assert list(result["losses"]) == losses
    assert set(result["groups"]) == set(GROUPS)
    # Every sampled RoI is counted once: 2 batches x 2 images x 128 RoIs per image.
    fg = sum(result["groups"][g]["fg_rois"] for g in GROUPS)
    assert fg + result["bg_rois"] == 2 * 2 * 128 and fg > 0
    sig, eql = result["losses"]["SigmoidCELoss"], result["losses"]["EQLLoss"]
    for g in GROUPS:
        assert set(eql["groups"][g]) == {
            "positive", "neg_fg", "neg_bg", "removed_fg", "removed_bg", "neg_over_pos"
        }  # fmt: skip
        if result["groups"][g]["classes"] == 0:
            continue
        assert sig["groups"][g]["removed_bg"] == pytest.approx(0, abs=1e-9)
        assert eql["groups"][g]["positive"] == pytest.approx(sig["groups"][g]["positive"])
        assert eql["groups"][g]["neg_bg"] == pytest.approx(sig["groups"][g]["neg_bg"])
    assert eql["state"] == "stateless"
    assert 0 <= result["losses"]["DropLoss"]["mean_rho"] <= 1


# Cascade heads replace detectron2's box path, which roi_box_features cannot replay.
CASCADE = [
    "MODEL.ROI_HEADS.NAME", "LongTailCascadeROIHeads",
    "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "True",
]  # fmt: skip


@pytest.mark.parametrize(
    "args,opts,expected",
    [
        (["--losses", "NoSuchLoss", "EQLLoss"], [], "unknown loss 'NoSuchLoss'; choices: "),
        (["--weights", "missing/model_final.pth"], [], "--weights missing/model_final.pth"),
        # EQL v2 needs C + 1 logits, the sigmoid model has C.
        (["--losses", "EQLv2Loss"], [], "EQLv2Loss (13) take another number of logits"),
        ([], CASCADE, "LongTailCascadeROIHeads (MODEL.ROI_HEADS.NAME) replaces"),
    ],
)
def test_bad_input_is_one_line(datasets_root, tmp_path, args, opts, expected):
    out = tmp_path / "out"
    # The last --weights given counts (argparse), and the last value of a config key.
    argv = ["--config-file", INSTANT, "--weights", "", "--output", str(out), *args]
    proc = run_tool(*argv, *SIGMOID, *opts)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert not out.exists()


def test_stateful_loss_uses_the_checkpoint_statistics(datasets_root, tmp_path):
    from longtail_d2.engine import prepare_run, trainer_class

    cfg = prepare_run(EQLV2, ["MODEL.DEVICE", "cpu"])
    model = trainer_class(cfg).build_model(cfg)
    loss = model.roi_heads.box_predictor.cls_loss
    # g = P / Q = 0.1 for every class: negatives weighted r = sigmoid(gamma (g - mu)), well below
    # the r = 1 of fresh statistics (P = Q = 0).
    loss.pos_grad.fill_(0.1)
    loss.neg_grad.fill_(1.0)
    torch.save({"model": model.state_dict()}, tmp_path / "model.pth")
    main = runpy.run_path(TOOL, run_name="loss_gradients")["main"]
    argv = ["--config-file", EQLV2, "--weights", str(tmp_path / "model.pth"), "--batches", "2"]
    result = main(argv + ["--losses", "EQLv2Loss", "MODEL.DEVICE", "cpu"])
    entry = result["losses"]["EQLv2Loss"]
    assert entry["state"] == "checkpoint statistics, frozen"
    r = _sigmoid(loss.gamma * (0.1 / (1.0 + 1e-10) - loss.mu))
    # EQL v2 scales every negative of class j by r_j, against BCE's (1/R) |sigma(z)|: the removed
    # fraction is 1 - r in both sources, on both batches (the statistics do not move).
    for group in GROUPS:
        if result["groups"][group]["classes"]:
            assert entry["groups"][group]["removed_bg"] == pytest.approx(1 - r, rel=1e-9)
