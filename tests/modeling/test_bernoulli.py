"""bernoulli_mask: exactly Bernoulli(p) (beyond its 16-bit first draw), reproducible by seed."""

import pytest
import torch

from longtail_d2.modeling.losses.bernoulli import bernoulli_mask


@pytest.mark.parametrize("p", [0.3, 1 / 3, 0.5, 0.97])
def test_frequency_within_binomial_spread(p):
    torch.manual_seed(0)
    n = 1_000_000
    count = bernoulli_mask((1000, 1000), p).sum().item()
    sigma = (n * p * (1 - p)) ** 0.5
    assert abs(count - n * p) < 5 * sigma


@pytest.mark.parametrize("p", [2.0**-20, 1 - 2.0**-20])
def test_probabilities_finer_than_16_bits(p):
    """p = 2^-20 lies between the 16-bit grid points 0 and 2^-16: rounding down would give no
    True in 16 M draws, rounding up ~256; exactly Bernoulli(p), the count of the rarer outcome
    is Poisson(16)."""
    torch.manual_seed(1)
    mask = bernoulli_mask((4096, 4096), p)
    rare = mask.sum().item() if p < 0.5 else (~mask).sum().item()
    assert 2 <= rare <= 40


def test_reproducible_from_torch_seed_and_advancing():
    torch.manual_seed(5)
    a = bernoulli_mask((300, 7), 0.5)
    torch.manual_seed(5)
    b = bernoulli_mask((300, 7), 0.5)
    c = bernoulli_mask((300, 7), 0.5)
    assert a.shape == (300, 7) and a.dtype == torch.bool
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_limits_and_bad_probability():
    assert bernoulli_mask((3, 4), 0.0).sum() == 0
    assert bernoulli_mask((3, 4), 1.0).all()
    assert bernoulli_mask((0, 5), 0.5).shape == (0, 5)
    with pytest.raises(ValueError, match="p must be in"):
        bernoulli_mask((2,), 1.5)
