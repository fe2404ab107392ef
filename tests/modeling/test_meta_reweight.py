"""BALMS's meta re-weighting: the meta gradient against finite differences, the direction the
learner moves, and the re-weighted loss."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from longtail_d2.modeling.losses import balanced_sigmoid_loss, sigmoid_ce_loss
from longtail_d2.modeling.meta_reweight import (
    META_OBJECTIVES,
    MetaReweighter,
    balms_loss,
    balms_roi_weights,
    meta_gradient,
    meta_step,
)

C, D = 4, 6
LR, MOMENTUM, WD = 0.5, 0.9, 1e-3


def _problem(seed=0):
    torch.manual_seed(seed)
    classifier = nn.Linear(D, C).double()
    optimizer = torch.optim.SGD(classifier.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    x = torch.randn(20, D, dtype=torch.float64)
    y = torch.randint(0, C + 1, (20,))
    y[:4] = torch.arange(4)  # every class has a foreground RoI
    xm = torch.randn(12, D, dtype=torch.float64)
    ym = torch.arange(12) % C
    freq = torch.tensor([0.5, 0.2, 0.05, 0.01], dtype=torch.float64)
    # One real step, so that the momentum buffers are not empty.
    sigmoid_ce_loss(classifier(x), y).backward()
    optimizer.step()
    optimizer.zero_grad()
    return classifier, optimizer, x, y, xm, ym, freq


def _official_meta_loss(logits, gt, freq):
    """The reference's meta objective: its head shifts the logits of foreground RoIs in place,
    z += log(pi / (1 - pi)), and then computes its "sigmoid" loss, (1/M) sum BCE, on them."""
    z = logits.clone()
    fg = gt < len(freq)
    z[fg] += torch.log(freq / (1 - freq))  # the in-place edit
    targets = torch.zeros_like(z)
    targets[fg.nonzero()[:, 0], gt[fg]] = 1
    return F.binary_cross_entropy_with_logits(z, targets, reduction="sum") / len(gt)


HAND_OBJECTIVES = {
    "balanced": _official_meta_loss,
    "plain": lambda logits, gt, freq: sigmoid_ce_loss(logits, gt),
}


def _meta_loss_by_hand(classifier, optimizer, x, y, xm, ym, freq, theta, objective="balanced"):
    """The virtual step written out: d = g + wd * p; buf = momentum * buf + d; p' = p - lr buf."""
    params = [
        classifier.weight.detach().clone().requires_grad_(True),
        classifier.bias.detach().clone().requires_grad_(True),
    ]
    loss = balms_loss(x @ params[0].T + params[1], y, freq, torch.sigmoid(theta))
    grads = torch.autograd.grad(loss, params)
    stepped = []
    for p, g, real in zip(params, grads, (classifier.weight, classifier.bias)):
        buf = MOMENTUM * optimizer.state[real]["momentum_buffer"] + g + WD * p.detach()
        stepped.append(p.detach() - LR * buf)
    return HAND_OBJECTIVES[objective](xm @ stepped[0].T + stepped[1], ym, freq)


def test_balanced_meta_objective_by_hand():
    """The default objective on a hand case: 2 classes, pi = (0.5, 0.2), so the foreground
    shift is (0, log 0.25); one RoI of each class and one background RoI (unshifted)."""
    logits = torch.tensor([[1.0, -1.0], [0.0, 2.0], [0.5, -0.5]], dtype=torch.float64)
    gt = torch.tensor([0, 1, 2])
    freq = torch.tensor([0.5, 0.2], dtype=torch.float64)

    def bce(z, y):
        p = 1 / (1 + math.exp(-z))
        return -math.log(p) if y else -math.log(1 - p)

    shift = math.log(0.25)
    by_hand = (
        bce(1.0, 1) + bce(-1.0 + shift, 0)  # class 0 RoI
        + bce(0.0, 0) + bce(2.0 + shift, 1)  # class 1 RoI
        + bce(0.5, 0) + bce(-0.5, 0)  # background RoI: no shift, all-zero targets
    ) / 3
    got = META_OBJECTIVES["balanced"](logits, gt, freq).item()
    assert got == pytest.approx(by_hand, rel=1e-12)
    assert _official_meta_loss(logits, gt, freq).item() == pytest.approx(by_hand, rel=1e-12)
    plain = bce(1.0, 1) + bce(-1.0, 0) + bce(0.0, 0) + bce(2.0, 1) + bce(0.5, 0) + bce(-0.5, 0)
    assert META_OBJECTIVES["plain"](logits, gt, freq).item() == pytest.approx(plain / 3, rel=1e-12)
    assert abs(by_hand - plain / 3) > 0.01  # the two objectives differ on this case


@pytest.mark.parametrize("objective", ["balanced", "plain"])
def test_meta_gradient_equals_finite_differences(objective):
    classifier, optimizer, x, y, xm, ym, freq = _problem()
    learner = MetaReweighter(C).double()
    learner.theta.data = torch.tensor([0.3, -0.2, 0.1, 0.0], dtype=torch.float64)
    grad, meta_loss = meta_gradient(
        classifier, optimizer, learner(), freq, x, y, xm, ym, learner.theta, objective
    )
    theta = learner.theta.detach()

    def by_hand(t):
        return _meta_loss_by_hand(classifier, optimizer, x, y, xm, ym, freq, t, objective)

    assert meta_loss.item() == pytest.approx(by_hand(theta).item(), rel=1e-10)
    eps = 1e-6
    numeric = torch.stack(
        [
            (by_hand(theta + eps * e) - by_hand(theta - eps * e))
            / (2 * eps)
            for e in torch.eye(C, dtype=torch.float64)
        ]
    )
    torch.testing.assert_close(grad, numeric, rtol=1e-5, atol=1e-9)
    assert grad.abs().max() > 1e-4  # not trivially zero
    # The real classifier and optimiser are untouched by the virtual step.
    assert classifier.weight.grad is None


def test_learner_favours_classes_with_high_meta_loss():
    # Class 0 RoIs lie along e0, class 1 along e1; the meta batch holds only class 1, which the
    # classifier gets wrong. Weighting class 1 up in training lowers that meta loss, so theta_1
    # rises and (through the renormalisation) theta_0 falls.
    classifier = nn.Linear(2, 2)
    nn.init.zeros_(classifier.weight)
    nn.init.constant_(classifier.bias, -2.0)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=0.5)
    x = torch.tensor([[1.0, 0.0]] * 6 + [[0.0, 1.0]] * 2)
    y = torch.tensor([0] * 6 + [1] * 2)
    xm, ym = torch.tensor([[0.0, 1.0]] * 4), torch.tensor([1] * 4)
    learner = MetaReweighter(2)
    adam = torch.optim.Adam(learner.parameters(), lr=0.05)
    freq = torch.tensor([0.5, 0.5])  # no shift: only the weights matter
    for _ in range(5):
        meta_step(learner, adam, classifier, optimizer, freq, (x, y), (xm, ym))
    w = learner().detach()
    assert w[1] > 0.5 > w[0]


def test_roi_weights_and_loss():
    gt = torch.tensor([0, 1, 1, 3, 3])  # C = 3: two background RoIs
    w = torch.tensor([0.2, 0.8, 0.5])
    # Foreground weights 0.2, 0.8, 0.8 renormalised to mean 1: x 3 / 1.8.
    expected = torch.tensor([0.2 * 3 / 1.8, 0.8 * 3 / 1.8, 0.8 * 3 / 1.8, 1.0, 1.0])
    torch.testing.assert_close(balms_roi_weights(gt, w), expected)
    torch.manual_seed(0)
    logits = torch.randn(5, 3)
    freq = torch.tensor([0.3, 0.1, 0.6])
    rows = [balanced_sigmoid_loss(logits[i : i + 1], gt[i : i + 1], freq) for i in range(5)]
    by_hand = sum(v * r for v, r in zip(expected, rows)) / 5
    assert balms_loss(logits, gt, freq, w).item() == pytest.approx(by_hand.item(), rel=1e-6)
    # Equal weights: the plain Balanced Softmax loss.
    assert balms_loss(logits, gt, freq, torch.full((3,), 0.5)).item() == pytest.approx(
        balanced_sigmoid_loss(logits, gt, freq).item(), rel=1e-6
    )


def test_learner_init():
    assert torch.allclose(MetaReweighter(5)(), torch.full((5,), 0.5))
    assert torch.allclose(MetaReweighter(2, init_weight=0.2)(), torch.full((2,), 0.2))
    with pytest.raises(ValueError, match="INIT_WEIGHT"):
        MetaReweighter(2, init_weight=1.0)
