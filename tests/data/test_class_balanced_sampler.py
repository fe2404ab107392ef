import itertools
import math
from collections import Counter

import numpy as np
import pytest

from longtail_d2.data import load_longtail_json
from longtail_d2.data.class_balanced_sampler import (
    ClassBalancedSampler,
    _Fenwick,
    class_balanced_repeat_factors,
)
from tests.conftest import write_json
from tests.data.small_dataset import coco_dict, write_images


def test_repeat_factors_by_hand(tmp_path):
    images = write_images(tmp_path / "images")
    loaded = load_longtail_json(write_json(tmp_path / "c.json", coco_dict()), images)
    dicts = [d for d in loaded.dataset_dicts if d["annotations"]]
    # 4 annotated images; f = 3/4, 2/4, 1/4 for classes 0, 1, 2 -> 1/f = 4/3, 2, 4.
    # Images {0, 1} -> 2, {0} -> 4/3, {1} -> 2, {0, 2} -> 4 (no sqrt, no threshold).
    np.testing.assert_allclose(class_balanced_repeat_factors(dicts), [2, 4 / 3, 2, 4])


def test_fenwick_search():
    tree = _Fenwick(np.array([2, 0, 3, 1]))
    assert tree.total == 6
    assert [tree.find(t) for t in range(6)] == [0, 0, 2, 2, 2, 3]
    tree.add(2, -3)
    assert [tree.find(t) for t in range(3)] == [0, 0, 3]


def test_expected_draws_per_pass():
    factors = [1.0, 2.5, 0.0, 10.0]
    sampler = ClassBalancedSampler(factors, seed=0)
    passes = 4000
    n = int(sum(factors) * passes)
    counts = Counter(itertools.islice(iter(sampler), n))
    # E[copies of I per pass] = r(I) under stochastic rounding; an image with r = 0 never comes.
    for index, factor in enumerate(factors):
        assert counts[index] / passes == pytest.approx(factor, rel=0.03, abs=0.01)
    assert sampler.expected_pass_length() == pytest.approx(13.5)


def test_each_pass_is_a_permutation_of_the_rounded_multiset():
    sampler = ClassBalancedSampler([1.0, 2.0, 3.0], seed=1)  # integers: no rounding noise
    stream = list(itertools.islice(iter(sampler), 12))
    assert Counter(stream[:6]) == {0: 1, 1: 2, 2: 3}
    assert Counter(stream[6:]) == {0: 1, 1: 2, 2: 3}


def test_ranks_share_one_stream():
    whole = list(itertools.islice(iter(ClassBalancedSampler([1.5, 3.0, 7.0], seed=4)), 40))
    parts = []
    for rank in range(2):
        s = ClassBalancedSampler([1.5, 3.0, 7.0], seed=4)
        s._rank, s._world_size = rank, 2
        parts.append(list(itertools.islice(iter(s), 20)))
    assert parts[0] == whole[0::2] and parts[1] == whole[1::2]


def test_huge_factors_are_not_materialised():
    # 1 / f reaches ~1e5 on LVIS; here 1e12 copies per pass could not be listed in memory
    # (a materialising sampler would fail here with MemoryError).
    sampler = ClassBalancedSampler([1e12, 1.0, 3.0], seed=0)
    head = list(itertools.islice(iter(sampler), 1000))
    assert Counter(head)[0] > 990
    assert math.isclose(sampler.expected_pass_length(), 1e12 + 4)


def test_no_positive_factor_is_an_error():
    with pytest.raises(ValueError, match="no image"):
        ClassBalancedSampler([0.0, 0.0], seed=0)
