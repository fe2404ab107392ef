"""The fused sigmoid BCE (``sigmoid_bce``): value and gradient against torch's dense
binary_cross_entropy_with_logits for every weight layout, gradcheck in float64, and the EQL v2
statistics it returns against their dense definition."""

import pytest
import torch
import torch.nn.functional as F

from longtail_d2.modeling.losses.sigmoid_ce import _SigmoidBCE, positive_positions, sigmoid_bce

R, K = 7, 5
# Rows 2 and 5 are background (label K): no positive term.
GT = torch.tensor([0, 3, K, 4, 3, K, 1])


def _dense(logits, weights, pos_weights):
    """The definition: one-hot Y, W broadcast to (R, K) with pos_weights at (r, y_r)."""
    rows, cols = positive_positions(GT, K)
    targets = torch.zeros(R, K, dtype=logits.dtype)
    targets[rows, cols] = 1
    w = torch.ones(R, K, dtype=logits.dtype) if weights is None else weights.expand(R, K).clone()
    if pos_weights is not None:
        w[rows, cols] = pos_weights
    return targets, w


def _layouts():
    g = torch.Generator().manual_seed(0)
    num_pos = int((GT < K).sum())
    rand = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return {
        "none": (None, None),
        "per_class": (rand(1, K), None),
        "per_roi": (rand(R, 1), None),
        "dense": (rand(R, K), None),
        "dense_with_positive_override": (rand(R, K), rand(num_pos) + 1),
        "per_class_with_positive_override": (rand(1, K), rand(num_pos) + 1),
    }


@pytest.mark.parametrize("layout", list(_layouts()))
def test_sigmoid_bce_equals_dense_torch_bce(layout):
    weights, pos_weights = _layouts()[layout]
    torch.manual_seed(1)
    logits = (torch.randn(R, K, dtype=torch.float64) * 20).requires_grad_(True)  # up to +-80
    ours = sigmoid_bce(logits, positive_positions(GT, K), weights, pos_weights)
    targets, w = _dense(logits, weights, pos_weights)
    ref = F.binary_cross_entropy_with_logits(logits, targets, weight=w, reduction="sum") / R
    assert ours.item() == pytest.approx(ref.item(), rel=1e-9)
    (g_ours,) = torch.autograd.grad(ours * 3, logits)  # a non-unit upstream gradient too
    (g_ref,) = torch.autograd.grad(ref * 3, logits)
    torch.testing.assert_close(g_ours, g_ref)


@pytest.mark.parametrize("layout", list(_layouts()))
def test_sigmoid_bce_gradcheck(layout):
    weights, pos_weights = _layouts()[layout]
    torch.manual_seed(2)
    logits = torch.randn(R, K, dtype=torch.float64, requires_grad=True)
    positions = positive_positions(GT, K)
    assert torch.autograd.gradcheck(
        lambda z: sigmoid_bce(z, positions, weights, pos_weights), (logits,)
    )


def test_sigmoid_bce_with_statistics_gradcheck_and_dense_statistics():
    torch.manual_seed(3)
    logits = torch.randn(R, K, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(1, K, dtype=torch.float64)
    rows, cols = positive_positions(GT, K)
    pos_weights = torch.rand(len(rows), dtype=torch.float64) + 1

    def loss(z):
        return _SigmoidBCE.apply(z, rows, cols, weights, pos_weights, True)[0]

    assert torch.autograd.gradcheck(loss, (logits,))
    value, pos_inc, neg_inc = _SigmoidBCE.apply(logits, rows, cols, weights, pos_weights, True)
    plain = sigmoid_bce(logits, (rows, cols), weights, pos_weights)
    assert value.item() == pytest.approx(plain.item())
    targets, w = _dense(logits, weights, pos_weights)
    terms = (torch.sigmoid(logits.detach()) - targets).abs() * w
    torch.testing.assert_close(pos_inc, (terms * targets).sum(0))
    torch.testing.assert_close(neg_inc, (terms * (1 - targets)).sum(0))
    assert not pos_inc.requires_grad and not neg_inc.requires_grad


def test_sigmoid_bce_empty_batch():
    logits = torch.zeros(0, K, requires_grad=True)
    loss = sigmoid_bce(logits, positive_positions(torch.zeros(0, dtype=torch.long), K))
    loss.backward()
    assert loss.item() == 0 and logits.grad.shape == (0, K)


def test_balanced_sigmoid_with_learnt_roi_weights_second_order():
    """BALMS's virtual step differentiates the gradient: value, gradient and second-order
    gradient of the per-RoI form against torch's dense BCE."""
    from longtail_d2.modeling.losses import balanced_sigmoid_loss
    from longtail_d2.modeling.losses.balanced_softmax import balanced_logits

    torch.manual_seed(4)
    logits = torch.randn(R, K, dtype=torch.float64, requires_grad=True)
    roi_weights = torch.rand(R, dtype=torch.float64, requires_grad=True)
    freq = torch.rand(K, dtype=torch.float64)
    ours = balanced_sigmoid_loss(logits, GT, freq, roi_weights)
    targets, _ = _dense(logits, None, None)
    terms = F.binary_cross_entropy_with_logits(
        balanced_logits(logits, GT, freq), targets, reduction="none"
    )
    ref = (terms * roi_weights[:, None]).sum() / R
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)
    for a, b in zip(
        torch.autograd.grad(ours, [logits, roi_weights]),
        torch.autograd.grad(ref, [logits, roi_weights]),
    ):
        torch.testing.assert_close(a, b)
    fn = lambda z, v: balanced_sigmoid_loss(z, GT, freq, v)  # noqa: E731
    assert torch.autograd.gradgradcheck(fn, (logits, roi_weights))


def test_seesaw_fused_terms_equal_autograd_of_the_definition():
    """Seesaw's one-function backward against autograd through the definition: the scale
    S = M C from ratios of counts and of detached softmax scores (q > 0 too), CE on the
    adjusted logits of the positive RoIs plus the objectness CE."""
    from longtail_d2.modeling.losses import seesaw_loss

    torch.manual_seed(5)
    C, p, q, eps = 6, 0.8, 2.0, 1e-2
    gt = torch.tensor([0, 6, 3, 5, 6, 1, 5, 2])
    counts = torch.tensor([50.0, 3.0, 9.0, 1.0, 20.0, 7.0])
    logits = torch.randn(len(gt), C + 2, dtype=torch.float64, requires_grad=True)
    ours = seesaw_loss(logits, gt, counts, p, q, eps)
    fg = gt < C
    z, y = logits[fg, :C], gt[fg]
    with torch.no_grad():
        n = counts.double()
        mitigation = (n[None, :] / n[y][:, None]).clamp(max=1) ** p
        s = torch.softmax(z, dim=1)
        compensation = (s / s.gather(1, y[:, None]).clamp(min=eps)).clamp(min=1) ** q
    ref_cls = F.cross_entropy(z + torch.log(mitigation * compensation), y, reduction="sum")
    ref_obj = F.cross_entropy(logits[:, C:], (~fg).long(), reduction="sum")
    ref = (ref_cls / len(gt), ref_obj / len(gt))
    for a, b in zip(ours, ref):
        assert a.item() == pytest.approx(b.item(), rel=1e-10)
    (g_ours,) = torch.autograd.grad(2 * ours[0] + 3 * ours[1], logits)
    (g_ref,) = torch.autograd.grad(2 * ref[0] + 3 * ref[1], logits)
    torch.testing.assert_close(g_ours, g_ref)
