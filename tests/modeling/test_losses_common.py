"""Properties every loss shares: empty batches, gradcheck, width checks, buffers in state_dict,
and the federated and softmax losses."""

import pytest
import torch
import torch.nn.functional as F

from longtail_d2.modeling.losses import (
    BalancedSoftmaxLoss,
    DropLoss,
    EQLLoss,
    EQLv2Loss,
    FederatedLoss,
    SeesawLoss,
    SigmoidCELoss,
    SoftmaxCELoss,
    balanced_sigmoid_loss,
    drop_loss,
    eql_loss,
    eqlv2_loss,
    seesaw_loss,
    sigmoid_ce_loss,
)

C = 4
TAIL = torch.tensor([False, True, True, False])


def modules():
    return [
        SoftmaxCELoss(num_classes=C),
        SigmoidCELoss(num_classes=C),
        EQLLoss(num_classes=C, tail_mask=TAIL),
        DropLoss(num_classes=C, tail_mask=TAIL),
        EQLv2Loss(num_classes=C),
        SeesawLoss(num_classes=C),
        BalancedSoftmaxLoss(num_classes=C, class_freq=torch.tensor([0.5, 0.1, 0.01, 0.3])),
        FederatedLoss(
            num_classes=C, class_weights=torch.tensor([4.0, 2.0, 1.0, 3.0]), num_fed_classes=3
        ),
    ]


@pytest.mark.parametrize("module", modules(), ids=lambda m: type(m).__name__)
def test_empty_batch_gives_zero_loss_with_gradient(module):
    module.train()
    logits = torch.zeros(0, module.num_logits, requires_grad=True)
    losses = module(logits, torch.zeros(0, dtype=torch.int64))
    total = sum(losses.values())
    assert total.item() == 0.0
    total.backward()
    assert logits.grad is not None and logits.grad.shape == logits.shape


@pytest.mark.parametrize("module", modules(), ids=lambda m: type(m).__name__)
def test_scores_layout_and_width_check(module):
    module.eval()
    torch.manual_seed(0)
    logits = torch.randn(7, module.num_logits)
    scores = module.scores(logits)
    assert scores.shape == (7, C + 1) and torch.all(scores >= 0) and torch.all(scores <= 1)
    with pytest.raises(ValueError, match=f"\\(R, {module.num_logits}\\)"):
        module(torch.zeros(3, module.num_logits + 1), torch.zeros(3, dtype=torch.int64))


@pytest.mark.parametrize("module", modules(), ids=lambda m: type(m).__name__)
def test_training_step_moves_statistics_and_state_dict_round_trip(module, tmp_path):
    module.train()
    torch.manual_seed(1)
    module(torch.randn(6, module.num_logits), torch.tensor([0, 1, 4, 2, 4, 3]))
    path = tmp_path / "state.pth"
    torch.save(module.state_dict(), path)
    fresh = next(m for m in modules() if type(m) is type(module))
    fresh.load_state_dict(torch.load(path))
    for (name, a), (_, b) in zip(module.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name
    if isinstance(module, (EQLv2Loss, SeesawLoss)):
        assert any(v.abs().sum() > 0 for v in module.state_dict().values())


def _gradcheck(fn, width, seed=0):
    torch.manual_seed(seed)
    logits = torch.randn(6, width, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (logits,))


GT = torch.tensor([0, 1, 4, 2, 4, 3])


def test_gradcheck_pure_functions():
    _gradcheck(lambda z: sigmoid_ce_loss(z, GT), C)
    _gradcheck(lambda z: eql_loss(z, GT, TAIL), C)

    def dropped(z):  # the same Bernoulli draw at every evaluation
        torch.manual_seed(3)
        return drop_loss(z, GT, TAIL)

    _gradcheck(dropped, C)
    pos, neg = torch.tensor([3.0, 0.5, 0.1, 2.0]), torch.tensor([4.0, 5.0, 6.0, 2.0])
    _gradcheck(lambda z: eqlv2_loss(z, GT, pos, neg)[0], C + 1)
    freq = torch.tensor([0.5, 0.1, 0.01, 0.3], dtype=torch.float64)
    _gradcheck(lambda z: balanced_sigmoid_loss(z, GT, freq), C)
    # Seesaw's compensation uses detached scores (as in the paper), so its analytic gradient
    # differs from finite differences by design: check it with q = 0.
    counts = torch.tensor([9.0, 3.0, 1.0, 5.0])
    _gradcheck(lambda z: sum(seesaw_loss(z, GT, counts, q=0.0)), C + 2)


def test_softmax_ce_is_mean_cross_entropy():
    torch.manual_seed(4)
    logits = torch.randn(5, C + 1)
    gt = torch.tensor([0, 4, 2, 4, 1])
    loss = SoftmaxCELoss(num_classes=C)(logits, gt)["loss_cls"]
    assert loss.item() == pytest.approx(F.cross_entropy(logits, gt).item())


def test_federated_loss_restricts_the_classes():
    logits = torch.zeros(3, C + 1, requires_grad=True)
    gt = torch.tensor([1, 4, 1])
    # F = {1, background} plus num_fed - 2 = 1 sampled class among {0, 2, 3}.
    module = FederatedLoss(
        num_classes=C, class_weights=torch.tensor([1.0, 1.0, 1.0, 1.0]), num_fed_classes=3
    )
    torch.manual_seed(0)
    loss = module(logits, gt)["loss_cls"]
    loss.backward()
    used = (logits.grad[:, :C].abs().sum(0) > 0).tolist()
    assert used[1] and sum(used) == 2  # class 1 and one sampled negative
    assert torch.all(logits.grad[:, C] == 0)  # the last logit is unused, as in detectron2
    # Every term is ln 2 (logits 0): 3 RoIs x 2 classes / R = 2 ln 2.
    assert loss.item() == pytest.approx(2 * 0.6931471805599453)
    # With F = every class it is sigmoid BCE over the C classes.
    full = FederatedLoss(num_classes=C, class_weights=torch.ones(C), num_fed_classes=C + 5)
    assert full(logits, gt)["loss_cls"].item() == pytest.approx(
        sigmoid_ce_loss(logits[:, :C], gt).item()
    )
    # fed_classes is the subset the loss trains: the same draw gives the same classes.
    torch.manual_seed(0)
    fed = module.fed_classes(gt)
    assert sorted(fed[fed < C].tolist()) == [c for c in range(C) if used[c]]
    # One negative of three equally weighted ones: each is in F a third of the time.
    counts = torch.zeros(C + 1)
    for _ in range(3000):
        counts[module.fed_classes(gt)] += 1
    assert counts[1] == 3000 and counts[C] == 3000
    assert torch.allclose(counts[[0, 2, 3]] / 3000, torch.full((3,), 1 / 3), atol=0.04)
    # A class with zero weight is never sampled.
    zero = FederatedLoss(
        num_classes=C, class_weights=torch.tensor([0.0, 1.0, 0.0, 1.0]), num_fed_classes=3
    )
    for seed in range(5):
        torch.manual_seed(seed)
        logits.grad = None
        zero(logits, gt)["loss_cls"].backward()
        assert torch.all(logits.grad[:, [0, 2]] == 0)


def test_federated_draw_seed_fixes_f_whatever_the_global_seed():
    """FED_LOSS_DRAW_SEED >= 0: the sequence of F is the same under two global seeds, does not
    consume torch's global stream, changes from draw to draw, follows the same law as
    detectron2's draw, and continues where it stopped after a state_dict round trip."""
    gt = torch.tensor([1, 4, 1])
    weights = torch.tensor([1.0, 1.0, 1.0, 1.0])

    def sequence(global_seed, module, n=40):
        torch.manual_seed(global_seed)
        draws = [sorted(module.fed_classes(gt).tolist()) for _ in range(n)]
        return draws, torch.rand(1)

    a = FederatedLoss(num_classes=C, class_weights=weights, num_fed_classes=3, draw_seed=7)
    b = FederatedLoss(num_classes=C, class_weights=weights, num_fed_classes=3, draw_seed=7)
    draws_a, after_a = sequence(0, a)
    draws_b, _ = sequence(123, b)
    assert draws_a == draws_b
    torch.manual_seed(0)
    assert torch.equal(after_a, torch.rand(1))  # the global stream was not used
    assert all(1 in d and C in d and len(d) == 3 for d in draws_a)
    assert len({tuple(d) for d in draws_a}) == 3  # the negative changes from draw to draw
    other = FederatedLoss(num_classes=C, class_weights=weights, num_fed_classes=3, draw_seed=8)
    assert sequence(0, other)[0] != draws_a
    # Resume: a fresh module with the state after 25 draws draws the 26th onwards.
    c = FederatedLoss(num_classes=C, class_weights=weights, num_fed_classes=3, draw_seed=7)
    sequence(5, c, 25)
    resumed = FederatedLoss(num_classes=C, class_weights=weights, num_fed_classes=3, draw_seed=7)
    resumed.load_state_dict(c.state_dict())
    assert sequence(9, resumed, 15)[0] == draws_a[25:]
    # The law of detectron2's draw: weights 4 : 2 : 1 for classes 0, 2, 3 -> 4/7, 2/7, 1/7.
    d = FederatedLoss(
        num_classes=C, class_weights=torch.tensor([4.0, 9.0, 2.0, 1.0]), num_fed_classes=3,
        draw_seed=0,
    )
    counts = torch.zeros(C + 1)
    for _ in range(3500):
        counts[d.fed_classes(gt)] += 1
    assert torch.allclose(counts[[0, 2, 3]] / 3500, torch.tensor([4, 2, 1]) / 7.0, atol=0.03)
    # Default -1: detectron2's sampler on the global generator, no extra state.
    assert "fed_draws" not in FederatedLoss(num_classes=C, class_weights=weights).state_dict()


def test_pure_functions_name_the_width_mismatch():
    # The C vs C+1 confusion of the forks: EQL given C+1 logits says so.
    with pytest.raises(
        ValueError, match=r"eql_loss: expected logits of shape \(R, 4\), got \(2, 5\)"
    ):
        eql_loss(torch.zeros(2, 5), torch.tensor([0, 4]), TAIL)
    with pytest.raises(ValueError, match=r"seesaw_loss: expected logits of shape \(R, 6\)"):
        seesaw_loss(torch.zeros(2, 5), torch.tensor([0, 4]), torch.ones(4))


def test_fused_weighted_bce_equals_torch():
    from longtail_d2.modeling.losses.sigmoid_ce import weighted_bce

    torch.manual_seed(6)
    logits = (torch.randn(64, 9, dtype=torch.float64) * 20).requires_grad_(True)  # up to +-80
    targets = (torch.rand(64, 9) < 0.2).double()
    weights = torch.rand(64, 9, dtype=torch.float64)
    ours = weighted_bce(logits, targets, weights)
    ref = F.binary_cross_entropy_with_logits(logits, targets, weight=weights, reduction="sum") / 64
    assert ours.item() == pytest.approx(ref.item(), rel=1e-9)
    (g_ours,) = torch.autograd.grad(ours, logits)
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g_ours, g_ref)
    assert torch.autograd.gradcheck(lambda z: weighted_bce(z, targets, weights), (logits,))
