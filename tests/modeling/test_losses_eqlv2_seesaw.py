"""EQL v2 and Seesaw: hand-derived values, limits, and the statistics they keep."""

import math

import pytest
import torch
import torch.nn.functional as F

from longtail_d2.modeling.losses import EQLv2Loss, SeesawLoss, eqlv2_loss, seesaw_loss

LN2 = math.log(2)


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_eqlv2_first_step_is_bce_and_increments_by_hand():
    # R = 2, C = 2 (+ background channel), all logits 0 (sigma = 1/2). Row 0: class 0; row 1:
    # background. First step: every weight is 1 (g = 100), so the loss is BCE over the 3
    # channels: 6 ln 2 / 2 = 3 ln 2. |sigma - Y| = 1/2 everywhere: P += (1/2, 0) (class 0 is
    # positive once), Q += (1/2, 1) (class 0 negative once, class 1 twice); the bg channel is
    # not accumulated.
    logits = torch.zeros(2, 3)
    gt = torch.tensor([0, 2])
    loss, pos_inc, neg_inc = eqlv2_loss(logits, gt, torch.zeros(2), torch.zeros(2))
    assert loss.item() == pytest.approx(3 * LN2)
    assert pos_inc.tolist() == pytest.approx([0.5, 0.0])
    assert neg_inc.tolist() == pytest.approx([0.5, 1.0])
    bce = F.binary_cross_entropy_with_logits(logits, F.one_hot(gt, 3).float(), reduction="sum")
    assert loss.item() == pytest.approx(bce.item() / 2)


def test_eqlv2_second_step_by_hand():
    # From P = (1/2, 0), Q = (1/2, 1): g = (1, 0). Negative weights r = sigma(12 (g - 0.8)) =
    # (sigma(2.4), sigma(-9.6)); positive weights q = 1 + 4 (1 - r). Same logits (every BCE term
    # is ln 2): row 0 = q_0 + r_1 + 1 (bg negative), row 1 = r_0 + r_1 + 1 (bg positive).
    r0, r1 = sig(2.4), sig(-9.6)
    q0 = 1 + 4 * (1 - r0)
    expected = LN2 * (q0 + r1 + 1 + r0 + r1 + 1) / 2
    loss, _, _ = eqlv2_loss(
        torch.zeros(2, 3), torch.tensor([0, 2]), torch.tensor([0.5, 0.0]), torch.tensor([0.5, 1.0])
    )
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # A class never positive (class 1) now has negative weight sigma(-gamma mu).
    assert r1 == pytest.approx(sig(-12 * 0.8))


def test_eqlv2_module_accumulates_and_scores():
    module = EQLv2Loss(num_classes=2)
    module.train()
    module(torch.zeros(2, 3), torch.tensor([0, 2]))
    assert module.pos_grad.tolist() == pytest.approx([0.5, 0.0])
    assert module.neg_grad.tolist() == pytest.approx([0.5, 1.0])
    module.eval()  # evaluation does not move the statistics
    module(torch.zeros(2, 3), torch.tensor([0, 2]))
    assert module.pos_grad.tolist() == pytest.approx([0.5, 0.0])
    logits = torch.tensor([[1.0, -1.0, 0.5]])
    scores = module.scores(logits)
    obj = 1 - sig(0.5)
    assert scores[0].tolist() == pytest.approx([sig(1) * obj, sig(-1) * obj, sig(0.5)])


def test_seesaw_with_p_q_zero_is_softmax_ce_plus_objectness():
    torch.manual_seed(0)
    C = 5
    logits = torch.randn(10, C + 2)
    gt = torch.tensor([0, 1, 4, 5, 5, 2, 3, 5, 1, 0])
    cls, obj = seesaw_loss(logits, gt, torch.tensor([9.0, 3, 1, 7, 2]), p=0.0, q=0.0)
    fg = gt < C
    expected_cls = F.cross_entropy(logits[fg, :C], gt[fg], reduction="sum") / 10
    expected_obj = F.cross_entropy(logits[:, C:], (~fg).long(), reduction="sum") / 10
    assert cls.item() == pytest.approx(expected_cls.item(), rel=1e-6)
    assert obj.item() == pytest.approx(expected_obj.item(), rel=1e-6)


def test_seesaw_mitigation_by_hand():
    # N = (4, 1); class logits 0, objectness logits 0. A class-0 RoI: M_01 = (1/4)^1 -> the
    # class-1 logit becomes log(1/4): CE = -log(1 / (1 + 1/4)) = log(5/4). A class-1 RoI:
    # N_0 >= N_1 so M_10 = 1: CE = ln 2. Objectness CE of a foreground RoI with (0, 0) = ln 2.
    counts = torch.tensor([4.0, 1.0])
    cls, obj = seesaw_loss(torch.zeros(1, 4), torch.tensor([0]), counts, p=1.0, q=0.0)
    assert cls.item() == pytest.approx(math.log(5 / 4))
    assert obj.item() == pytest.approx(LN2)
    cls, _ = seesaw_loss(torch.zeros(1, 4), torch.tensor([1]), counts, p=1.0, q=0.0)
    assert cls.item() == pytest.approx(LN2)


def test_seesaw_compensation_by_hand():
    # Class-0 RoI with class logits (0, ln 3): s = (1/4, 3/4), s_1 / s_0 = 3 > 1 -> C_01 = 3^q.
    # q = 1: the class-1 logit becomes ln 3 + ln 3 = ln 9, CE = -log(1 / (1 + 9)) = ln 10.
    logits = torch.tensor([[0.0, math.log(3), 0.0, 0.0]])
    cls, _ = seesaw_loss(logits, torch.tensor([0]), torch.ones(2), p=0.8, q=1.0)
    assert cls.item() == pytest.approx(math.log(10))


def test_seesaw_never_lowers_a_logit_and_scores_sum_to_one():
    torch.manual_seed(1)
    C = 6
    logits = torch.randn(30, C + 2, requires_grad=True)
    gt = torch.randint(0, C + 1, (30,))
    base_cls, _ = seesaw_loss(logits, gt, torch.ones(C), p=0.0, q=0.0)
    counts = torch.tensor([50.0, 20, 10, 5, 2, 1])
    cls, _ = seesaw_loss(logits, gt, counts)
    # Compensation factors are >= 1: without mitigation (equal counts) the adjusted negative
    # logits are >= the raw ones, so the loss can only grow.
    comp_only, _ = seesaw_loss(logits, gt, torch.ones(C), p=0.8, q=2.0)
    assert comp_only.item() >= base_cls.item() - 1e-7
    assert torch.isfinite(cls)
    module = SeesawLoss(num_classes=C)
    scores = module.scores(logits)
    assert scores.shape == (30, C + 1)
    assert torch.allclose(scores.sum(1), torch.ones(30))


def test_seesaw_mitigation_is_one_for_rarer_negatives():
    # M_ij = 1 whenever N_j >= N_i: for the rarest class's RoI nothing is mitigated.
    torch.manual_seed(2)
    logits = torch.randn(4, 5)
    gt = torch.full((4,), 2)
    counts = torch.tensor([10.0, 5.0, 1.0])
    cls, _ = seesaw_loss(logits, gt, counts, p=0.8, q=0.0)
    plain, _ = seesaw_loss(logits, gt, counts, p=0.0, q=0.0)
    assert cls.item() == pytest.approx(plain.item())


def test_seesaw_module_counts_before_the_loss():
    module = SeesawLoss(num_classes=3)
    module.train()
    module(torch.zeros(4, 5), torch.tensor([0, 0, 2, 3]))
    assert module.cum_samples.tolist() == [2.0, 0.0, 1.0]
    module(torch.zeros(1, 5), torch.tensor([1]))
    assert module.cum_samples.tolist() == [2.0, 1.0, 1.0]


def test_eqlv2_rare_negative_increments_keep_precision():
    # A class that is positive with weight ~5 and negative with weight ~7e-5 in one batch: its
    # Q increment must be the sum of the tiny negative terms, not a difference of large sums.
    C = 3
    logits = torch.full((11, C + 1), -9.0)
    logits[:10, 0] = 5.0
    gt = torch.tensor([0] * 10 + [3])
    pos_grad, neg_grad = torch.tensor([0.0, 1.0, 1.0]), torch.tensor([1.0, 1.0, 1.0])
    _, pos_inc, neg_inc = eqlv2_loss(logits, gt, pos_grad, neg_grad)
    r0 = sig(-12 * 0.8)  # g_0 = 0
    expected = r0 * sig(-9.0)  # the background row's term for class 0: |sigma(-9) - 0| * r0
    assert neg_inc[0].item() == pytest.approx(expected, rel=1e-4)
    assert pos_inc[0].item() == pytest.approx(10 * (1 - sig(5.0)) * (1 + 4 * (1 - r0)), rel=1e-5)
