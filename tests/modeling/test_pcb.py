"""PCB: the confusion matrix, its gate and alpha schedule, the soft targets and losses."""

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from torch import nn

from longtail_d2.config import add_longtail_config
from longtail_d2.data import ClassStatistics
from longtail_d2.engine import prepare_run

from longtail_d2.modeling.losses import EQLv2Loss, SeesawLoss, SoftmaxCELoss, seesaw_loss
from longtail_d2.modeling.losses.eqlv2 import eqlv2_loss
from longtail_d2.modeling.losses.softmax_ce import softmax_ce_soft_loss
from longtail_d2.modeling.pcb import PCB_VARIANTS, PairwiseConfusion, pcb_alphas
from longtail_d2.modeling.roi_heads import PCBOutputLayers
from tests.conftest import REPO


def test_first_update_is_the_batch_mean_and_absent_rows_stay():
    m = PairwiseConfusion(3, momentum=0.99)
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    labels = torch.tensor([0, 0, 2])
    m.update(probs, labels)
    torch.testing.assert_close(m.matrix[0], torch.tensor([0.6, 0.25, 0.15]))
    torch.testing.assert_close(m.matrix[2], torch.tensor([0.1, 0.1, 0.8]))
    assert torch.all(m.matrix[1] == 0) and m.seen.tolist() == [2, 0, 1]
    assert not m.all_seen()
    # Second update of class 0 only: m * M + (1 - m) * B, re-normalised (already sums to 1).
    m.update(torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([0]))
    torch.testing.assert_close(
        m.matrix[0], 0.99 * torch.tensor([0.6, 0.25, 0.15]) + 0.01 * torch.tensor([0.0, 1.0, 0.0])
    )
    torch.testing.assert_close(m.matrix[2], torch.tensor([0.1, 0.1, 0.8]))  # untouched
    m.update(torch.tensor([[0.2, 0.2, 0.6]]), torch.tensor([1]))
    assert m.all_seen()


def test_rows_are_not_renormalised_for_sigmoid_probabilities():
    m = PairwiseConfusion(2, momentum=0.5, normalize_rows=False)
    m.update(torch.tensor([[0.8, 0.6]]), torch.tensor([1]))
    torch.testing.assert_close(m.matrix[1], torch.tensor([0.4, 0.3]))


def test_alpha_schedule():
    assert pcb_alphas(0.4, 3, active=True) == pytest.approx([0.0, 0.2, 0.4])
    assert pcb_alphas(0.4, 3, active=False) == [0.0, 0.0, 0.0]
    assert pcb_alphas(0.4, 1, active=True) == [0.4]


def _confusion():
    m = PairwiseConfusion(3)
    m.matrix.copy_(torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.4, 0.5]]))
    return m


def test_fight_back_targets_sum_to_one():
    m = _confusion()
    kwargs = PCB_VARIANTS[SoftmaxCELoss].loss_kwargs(m, torch.tensor([1, 0]), 0.4)
    q = kwargs["soft_targets"]
    # Column 1 of M over its sum: (0.3, 0.7, 0.4) / 1.4, i.e. P(GT = i | predicted 1).
    torch.testing.assert_close(q[0], torch.tensor([0.3, 0.7, 0.4]) / 1.4)
    torch.testing.assert_close(q.sum(1), torch.ones(2))
    assert kwargs["alpha"] == 0.4
    assert PCB_VARIANTS[SeesawLoss].loss_kwargs(m, torch.tensor([1]), 0.0) == {}


def test_eqlv2_targets_mix_raw_matrix_and_one_hot():
    m = _confusion()
    y = PCB_VARIANTS[EQLv2Loss].loss_kwargs(m, torch.tensor([2]), 0.2)["soft_targets"]
    # 0.2 * M[:, 2] + 0.8 * onehot(2) = 0.2 * (0.1, 0.1, 0.5) + (0, 0, 0.8)
    torch.testing.assert_close(y[0], torch.tensor([0.02, 0.02, 0.9]))


def test_softmax_soft_loss_by_hand_and_limits():
    # C = 2 + background, logits 0: p = 1/3 each. A positive RoI of class 0 with q = (1/2, 1/2):
    # KL = sum q log q - q log p = -ln 2 + ln 3 = ln 1.5; CE = ln 3. alpha = 0.5, R = 1:
    # 0.5 ln 3 + 0.5 ln 1.5.
    logits, gt = torch.zeros(1, 3), torch.tensor([0])
    loss = softmax_ce_soft_loss(logits, gt, torch.tensor([[0.5, 0.5]]), 0.5)
    assert loss.item() == pytest.approx(0.5 * math.log(3) + 0.5 * math.log(1.5))
    torch.manual_seed(0)
    logits = torch.randn(8, 4)
    gt = torch.tensor([0, 3, 1, 2, 3, 0, 1, 3])
    onehot = F.one_hot(gt[gt < 3], 3).float()
    # One-hot soft targets: KL = CE, so any alpha gives the plain loss.
    assert softmax_ce_soft_loss(logits, gt, onehot, 0.7).item() == pytest.approx(
        F.cross_entropy(logits, gt).item(), rel=1e-6
    )
    z = torch.randn(8, 5)
    a, _ = seesaw_loss(z, gt, torch.tensor([5.0, 2, 1]), soft_targets=onehot, alpha=0.3)
    b, _ = seesaw_loss(z, gt, torch.tensor([5.0, 2, 1]))
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    zz = torch.randn(8, 4)
    pos, neg = torch.tensor([1.0, 2, 3]), torch.tensor([2.0, 2, 2])
    soft = eqlv2_loss(zz, gt, pos, neg, soft_targets=onehot)
    hard = eqlv2_loss(zz, gt, pos, neg)
    for s, h in zip(soft, hard):
        torch.testing.assert_close(s, h)


PCB_CONFIGS = os.path.join(REPO, "projects", "PCB", "configs")


def _pcb_roi_heads(config, *opts):
    opts = ["MODEL.DEVICE", "cpu", "MODEL.ROI_BOX_HEAD.PCB.MLP_HIDDEN", "16", *opts]
    cfg = prepare_run(os.path.join(PCB_CONFIGS, config), opts)
    torch.manual_seed(0)
    return cfg, build_model(cfg).roi_heads


@pytest.mark.parametrize(
    "config, on",
    [
        ("eqlv2_pcb_mask_rcnn_R_18_FPN_instant.yaml", True),  # the reference: use_layer_norm=True
        ("softmax_pcb_mask_rcnn_R_18_FPN_instant.yaml", False),
        ("seesaw_pcb_mask_rcnn_R_18_FPN_instant.yaml", False),
    ],
)
def test_layer_norm_normalises_the_logits_entering_the_channel_mlp(datasets_root, config, on):
    """As the reference's MLP(use_layer_norm): LayerNorm(num_logits) on the previous pass's
    classification logits, first layer of the channel MLP only; absent when off."""
    cfg, heads = _pcb_roi_heads(config)
    assert cfg.MODEL.ROI_BOX_HEAD.PCB.USE_LAYER_NORM is on
    norms = [m for m in heads.modules() if isinstance(m, nn.LayerNorm)]
    if not on:
        assert norms == []
        return
    num_logits = heads.box_predictor.cls_score.out_features
    # EQL v2: C + 1 logits (the reference's cls channels, num_classes + 1).
    assert num_logits == cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1
    assert len(norms) == 1 and norms[0] is heads.channel_mlp[0]
    assert norms[0].normalized_shape == (num_logits,)
    assert isinstance(heads.channel_mlp[1], nn.Linear)
    assert not any(isinstance(m, nn.LayerNorm) for m in heads.spatial_mlp.modules())
    # Its input is the logits of the pass before (T - 1 calls), and it normalises them.
    logits, ln_inputs = [], []
    heads.box_predictor.cls_score.register_forward_hook(lambda m, i, o: logits.append(o))
    norms[0].register_forward_hook(lambda m, i, o: ln_inputs.append((i[0], o)))
    heads.eval()
    channels = heads.pooled_shape[0]
    features = {
        f: torch.randn(1, channels, 64 // s, 64 // s)
        for f, s in zip(heads.box_in_features, (4, 8, 16, 32))
    }
    proposals = Instances((64, 64))
    proposals.proposal_boxes = Boxes(torch.tensor([[0.0, 0, 30, 30], [10, 10, 50, 60]]))
    proposals.objectness_logits = torch.zeros(2)
    with torch.no_grad():
        heads._forward_box(features, [proposals])
    T = cfg.MODEL.ROI_BOX_HEAD.PCB.NUM_PASSES
    assert len(logits) == T and len(ln_inputs) == T - 1
    for t, (x, y) in enumerate(ln_inputs):
        torch.testing.assert_close(x, logits[t])
        normed = F.layer_norm(x, (num_logits,), norms[0].weight, norms[0].bias)
        torch.testing.assert_close(y, normed)


def _pcb_predictor(update_per_pass):
    cfg = add_longtail_config(get_cfg())
    cfg.merge_from_list(
        [
            *("MODEL.ROI_HEADS.NUM_CLASSES", "3"),
            *("MODEL.ROI_BOX_HEAD.CLS_LOSS", "SoftmaxCELoss"),
            *("MODEL.ROI_BOX_HEAD.PCB.START_ITER", "0"),
            *("MODEL.ROI_BOX_HEAD.PCB.MOMENTUM", "0.5"),
            *("MODEL.ROI_BOX_HEAD.PCB.UPDATE_PER_PASS", str(update_per_pass)),
        ]
    )
    stats = ClassStatistics(np.array([5, 3, 1]), np.array([5, 3, 1]), 9, ["f", "c", "r"])
    predictor = PCBOutputLayers(cfg, ShapeSpec(channels=8), class_stats=stats)
    predictor.train()
    return predictor


@pytest.mark.parametrize("update_per_pass", [False, True])
def test_confusion_updates_per_step_or_per_pass(update_per_pass):
    """UPDATE_PER_PASS: T EMA updates per step, pass t's probabilities before pass t's loss (the
    reference); else one, the last pass's, before every pass's loss."""
    predictor = _pcb_predictor(update_per_pass)
    gt = torch.tensor([0, 1, 2, 0, 3])
    boxes = Boxes(torch.tensor([[0.0, 0, 10, 10]]).repeat(len(gt), 1))
    proposals = Instances((64, 64), proposal_boxes=boxes, gt_boxes=boxes, gt_classes=gt)
    g = torch.Generator().manual_seed(0)
    passes = [(torch.randn(len(gt), 4, generator=g), torch.zeros(len(gt), 12)) for _ in range(3)]
    seen_by_loss, updates = [], []
    confusion = predictor.confusion
    update = confusion.update
    confusion.update = lambda p, y: (updates.append(p), update(p, y))
    predictor.cls_loss.register_forward_pre_hook(
        lambda m, args, kwargs: seen_by_loss.append(kwargs.get("soft_targets")),
        with_kwargs=True,
    )
    with EventStorage():
        predictor.iterative_losses(passes, [proposals], (0.2, 0.2, 0.6), 2)
    fg = gt < 3
    probs = [torch.softmax(s[fg, :3], dim=1) for s, _ in passes]
    expected = torch.zeros(3, 3)
    if update_per_pass:
        assert len(updates) == 3
        for t in range(3):
            torch.testing.assert_close(updates[t], probs[t])
            expected = _ema(expected, probs[t], gt[fg], first=t == 0)
            # pass t's targets come from the matrix after its own update
            col = expected / expected.sum(0, keepdim=True)
            if t > 0:  # alpha_0 = 0: pass 0 has no soft targets
                torch.testing.assert_close(seen_by_loss[t], col[:, gt[fg]].t())
    else:
        assert len(updates) == 1
        torch.testing.assert_close(updates[0], probs[-1])
        expected = _ema(expected, probs[-1], gt[fg], first=True)
        col = expected / expected.sum(0, keepdim=True)
        for t in (1, 2):
            torch.testing.assert_close(seen_by_loss[t], col[:, gt[fg]].t())
    assert seen_by_loss[0] is None
    torch.testing.assert_close(confusion.matrix, expected)
    assert confusion.seen.tolist() == [2.0 * len(updates), 1.0 * len(updates), 1.0 * len(updates)]


def _ema(matrix, probs, labels, first, m=0.5):
    """By hand: per class the batch mean, EMA'd with momentum m, rows re-normalised."""
    out = matrix.clone()
    for c in labels.unique():
        mean = probs[labels == c].mean(0)
        row = m * matrix[c] + (1 - m) * mean
        out[c] = row / row.sum()
    return out


def test_inference_decodes_the_trained_pass_relative_to_the_proposals(datasets_root):
    """As the reference: boxes at inference are the last pass's deltas (the pass whose
    regression is trained, REG_PASS = T - 1) applied to the original proposals, not to boxes
    refined by earlier passes. Checked through the training loss: the boxes decoded at inference,
    taken as ground truth of the same RoIs, give zero box loss, while other passes' would not."""
    cfg, heads = _pcb_roi_heads("softmax_pcb_mask_rcnn_R_18_FPN_instant.yaml")
    T, reg_pass = cfg.MODEL.ROI_BOX_HEAD.PCB.NUM_PASSES, cfg.MODEL.ROI_BOX_HEAD.PCB.REG_PASS
    assert reg_pass == T - 1
    predictor = heads.box_predictor
    with torch.no_grad():  # deltas large enough that the passes' boxes differ visibly
        predictor.bbox_pred.weight.normal_(0, 0.05)
    passes, used = [], []
    predictor.register_forward_hook(lambda m, i, o: passes.append(o))
    inference = predictor.inference
    predictor.inference = lambda preds, props: (used.append(preds), inference(preds, props))[1]
    channels = heads.pooled_shape[0]
    g = torch.Generator().manual_seed(0)
    features = {
        f: torch.randn(1, channels, 64 // s, 64 // s, generator=g)
        for f, s in zip(heads.box_in_features, (4, 8, 16, 32))
    }
    boxes = Boxes(torch.tensor([[12.0, 12, 30, 34], [20, 16, 44, 40], [26, 24, 50, 46]]))
    proposals = Instances((64, 64), proposal_boxes=boxes, objectness_logits=torch.zeros(3))
    heads.eval()
    with torch.no_grad():
        (instances,) = heads._forward_box(features, [proposals])
    assert len(passes) == T and len(used) == 1
    assert used[0][1] is passes[-1][1]  # the last pass's deltas are decoded
    # The returned boxes are proposals decoded with those deltas (per class; clipped to 64 x 64).
    decoded = predictor.predict_boxes(used[0], [proposals])[0].view(3, -1, 4)
    assert len(instances) > 0
    for box, c in zip(instances.pred_boxes.tensor, instances.pred_classes):
        distance = (decoded[:, c].clamp(0, 64) - box).abs().amax(dim=1).min()
        assert distance < 1e-4
    # Training on the same RoIs with those boxes as ground truth: the trained pass's box loss is 0.
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    gt_classes = torch.tensor([0, 1, num_classes - 1])
    gt_boxes = Boxes(decoded[torch.arange(3), gt_classes])
    targets = Instances((64, 64), proposal_boxes=boxes, gt_boxes=gt_boxes, gt_classes=gt_classes)
    heads.train()
    passes.clear()
    with EventStorage(), torch.no_grad():
        losses = heads._forward_box(features, [targets])
    assert losses["loss_box_reg"] < 1e-4
    for t in range(T - 1):  # the untrained passes' deltas would not give these boxes
        assert predictor.box_loss(passes[t][1], [targets], gt_classes) > 1e-2
