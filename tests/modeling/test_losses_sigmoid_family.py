"""Sigmoid CE, EQL, DropLoss and the sigmoid Balanced Softmax: hand-derived values and limits."""

import math

import pytest
import torch
import torch.nn.functional as F

from longtail_d2.modeling.losses import (
    balanced_sigmoid_loss,
    drop_loss,
    eql_loss,
    sigmoid_ce_loss,
)
from longtail_d2.modeling.losses.balanced_softmax import BalancedSoftmaxLoss
from longtail_d2.modeling.losses.droploss import drop_weights

LN2 = math.log(2)
# R = 2, C = 2. Row 0 is a foreground RoI of class 0, row 1 a background RoI (label C = 2).
# sigma(0) = 1/2 and sigma(ln 3) = 3/4, so BCE(0, t) = ln 2 for t in {0, 1},
# BCE(ln 3, 0) = -ln(1/4) = 2 ln 2 and BCE(ln 3, 1) = -ln(3/4).
LOGITS = torch.tensor([[0.0, math.log(3)], [math.log(3), 0.0]])
GT = torch.tensor([0, 2])


def test_sigmoid_ce_by_hand():
    # Row 0: BCE(0, 1) + BCE(ln 3, 0) = ln 2 + 2 ln 2; row 1: 2 ln 2 + ln 2. Sum / R = 3 ln 2.
    assert sigmoid_ce_loss(LOGITS, GT).item() == pytest.approx(3 * LN2)


def test_eql_by_hand():
    # Class 1 is tail: its negative term on the foreground row 0 (2 ln 2) is dropped; the
    # background row keeps everything. (ln 2 + 3 ln 2) / 2 = 2 ln 2.
    tail = torch.tensor([False, True])
    assert eql_loss(LOGITS, GT, tail).item() == pytest.approx(2 * LN2)


def test_eql_limits():
    torch.manual_seed(0)
    logits = torch.randn(16, 5)
    gt = torch.randint(0, 6, (16,))
    # An empty tail set is sigmoid BCE.
    assert torch.allclose(
        eql_loss(logits, gt, torch.zeros(5, dtype=torch.bool)), sigmoid_ce_loss(logits, gt)
    )
    # Everything tail: on a foreground RoI only its own class gets a gradient.
    logits.requires_grad_(True)
    eql_loss(logits, gt, torch.ones(5, dtype=torch.bool)).backward()
    fg = gt < 5
    other = torch.ones(16, 5, dtype=torch.bool)
    other[fg.nonzero()[:, 0], gt[fg]] = False
    assert torch.all(logits.grad[fg][other[fg]] == 0)
    assert torch.all(logits.grad[~fg] != 0)  # background rows are never masked


def test_droploss_with_only_tail_foreground_is_eql():
    torch.manual_seed(1)
    logits = torch.randn(20, 4)
    tail = torch.tensor([True, True, False, True])
    gt = torch.tensor([0, 1, 3, 4] * 5)  # foreground classes all tail -> rho = 1
    assert torch.allclose(drop_loss(logits, gt, tail), eql_loss(logits, gt, tail))


def test_droploss_mask_expectation():
    """E[weight] of a background negative is 1 - T_j (1 - rho), over many (RoI, class) draws."""
    tail = torch.tensor([False, True, True])
    num_bg = 20000
    # One foreground RoI of tail class 1 and one of head class 0: rho = 1/2.
    gt = torch.cat([torch.tensor([1, 0]), torch.full((num_bg,), 3)])
    logits = torch.zeros(num_bg + 2, 3)  # every BCE term is ln 2
    torch.manual_seed(2)
    loss = drop_loss(logits, gt, tail).item() * (num_bg + 2)
    # Foreground rows are EQL: the class-1 row keeps classes 0 and 1 (class 2 is a tail
    # negative) -> 2 ln 2; the class-0 row keeps only class 0 -> ln 2.
    # Background rows: 1 + 2 * (1 - (1 - 1/2)) = 2 kept terms on average -> 2 ln 2 each.
    expected = 3 * LN2 + num_bg * 2 * LN2
    assert loss == pytest.approx(expected, rel=0.01)
    # rho = 0 (all foreground is head): every tail negative of a background row is dropped.
    gt0 = torch.cat([torch.tensor([0]), torch.full((10,), 3)])
    assert drop_loss(torch.zeros(11, 3), gt0, tail).item() * 11 == pytest.approx(LN2 + 10 * LN2)


def test_drop_weights_layout():
    """Foreground rows are EQL's 1 - T_j, background head columns 1, background tail columns a
    0 / 1 draw kept with probability rho; the dtype follows the logits."""
    tail = torch.tensor([True, False, True, True])
    gt = torch.cat([torch.tensor([0, 1, 2]), torch.full((4000,), 4)])
    logits = torch.zeros(len(gt), 4, dtype=torch.float64)
    torch.manual_seed(3)
    w = drop_weights(gt, tail, 0.25, logits)
    assert w.dtype == torch.float64 and w.shape == logits.shape
    assert torch.equal(w[:3], (~tail).to(w.dtype).expand(3, 4))
    bg = w[3:]
    assert torch.all(bg[:, 1] == 1)
    assert set(bg[:, tail].unique().tolist()) == {0.0, 1.0}
    assert bg[:, tail].mean().item() == pytest.approx(0.25, abs=0.015)  # 12,000 draws


def test_droploss_draws_from_global_generator():
    # Distinct logits: the loss depends on which terms are kept, not only on how many.
    logits = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    gt = torch.tensor([1, 0] + [3] * 48)
    tail = torch.tensor([False, True, True])
    torch.manual_seed(5)
    a = drop_loss(logits, gt, tail)
    torch.manual_seed(5)
    b = drop_loss(logits, gt, tail)
    c = drop_loss(logits, gt, tail)
    assert a == b and a != c


def test_balanced_softmax_by_hand():
    # pi = (1/4, 1/2): the foreground row's logits shift by (ln(1/3), 0). Row 0 with logits 0:
    # BCE(ln(1/3), 1) = -ln(1/4) = 2 ln 2, BCE(0, 0) = ln 2. R = 1 -> 3 ln 2.
    freq = torch.tensor([0.25, 0.5])
    loss = balanced_sigmoid_loss(torch.zeros(1, 2), torch.tensor([0]), freq)
    assert loss.item() == pytest.approx(3 * LN2)


def test_balanced_softmax_limits():
    torch.manual_seed(3)
    logits = torch.randn(12, 4)
    gt = torch.randint(0, 5, (12,))
    freq = torch.tensor([0.9, 0.3, 0.01, 0.002])
    # Background rows are unchanged.
    bg = torch.full((12,), 4)
    assert torch.allclose(balanced_sigmoid_loss(logits, bg, freq), sigmoid_ce_loss(logits, bg))
    # pi = 1/2 for every class: no shift, the plain sigmoid loss.
    assert torch.allclose(
        balanced_sigmoid_loss(logits, gt, torch.full((4,), 0.5)), sigmoid_ce_loss(logits, gt)
    )
    # Foreground rows: BCE on z + log(pi / (1 - pi)).
    fg = gt < 4
    shifted = logits[fg] + torch.log(freq / (1 - freq))
    target = F.one_hot(gt[fg], 4).float()
    expected = (
        F.binary_cross_entropy_with_logits(shifted, target, reduction="sum")
        + F.binary_cross_entropy_with_logits(
            logits[~fg], torch.zeros_like(logits[~fg]), reduction="sum"
        )
    ) / 12
    assert balanced_sigmoid_loss(logits, gt, freq).item() == pytest.approx(
        expected.item(), rel=1e-5
    )
    # Inference ignores the shift.
    module = BalancedSoftmaxLoss(num_classes=4, class_freq=freq)
    assert torch.allclose(module.scores(logits)[:, :4], torch.sigmoid(logits))
    assert torch.all(module.scores(logits)[:, 4] == 0)
