"""PCB: the confusion matrix, its gate and alpha schedule, the soft targets and losses."""

import math

import pytest
import torch
import torch.nn.functional as F

from longtail_d2.modeling.losses import EQLv2Loss, SeesawLoss, SoftmaxCELoss, seesaw_loss
from longtail_d2.modeling.losses.eqlv2 import eqlv2_loss
from longtail_d2.modeling.losses.softmax_ce import softmax_ce_soft_loss
from longtail_d2.modeling.pcb import PCB_VARIANTS, PairwiseConfusion, pcb_alphas


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
