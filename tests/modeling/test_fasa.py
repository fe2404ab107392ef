"""FASA: feature statistics, virtual features, initial probabilities, grouping, adaptation."""

import logging

import numpy as np
import pytest
import torch

import zlib

from longtail_d2.engine.fasa_adaptation import held_out_by_group, split_held_out
from longtail_d2.modeling.fasa import (
    FeatureStatistics,
    adapt_probabilities,
    class_groups,
    draw_virtual_features,
    initial_probabilities,
)


def test_statistics_against_numpy():
    rng = np.random.default_rng(0)
    x1, y1 = rng.normal(size=(7, 4)), np.array([0, 0, 0, 2, 2, 2, 1])
    x2, y2 = rng.normal(size=(5, 4)), np.array([0, 0, 2, 2, 2])
    s = FeatureStatistics(3, 4, momentum=0.1)
    s.update(torch.tensor(x1, dtype=torch.float32), torch.tensor(y1))
    # First batch of a class sets its statistics; unbiased variance; one RoI -> variance 0.
    np.testing.assert_allclose(s.mean[0], x1[y1 == 0].mean(0), rtol=1e-5)
    np.testing.assert_allclose(s.var[2], x1[y1 == 2].var(0, ddof=1), rtol=1e-5)
    np.testing.assert_allclose(s.mean[1], x1[6], rtol=1e-6)
    assert torch.all(s.var[1] == 0)
    s.update(torch.tensor(x2, dtype=torch.float32), torch.tensor(y2))
    # Then an EMA with weight 0.1 on the batch; class 1 (absent) is left as it is.
    expected = 0.1 * x2[y2 == 0].mean(0) + 0.9 * x1[y1 == 0].mean(0)
    np.testing.assert_allclose(s.mean[0], expected, rtol=1e-5)
    expected_var = 0.1 * x2[y2 == 2].var(0, ddof=1) + 0.9 * x1[y1 == 2].var(0, ddof=1)
    np.testing.assert_allclose(s.var[2], expected_var, rtol=1e-5)
    np.testing.assert_allclose(s.mean[1], x1[6], rtol=1e-6)
    assert s.used.tolist() == [1, 1, 1]


def test_class_seen_once_gives_its_mean():
    s = FeatureStatistics(3, 5)
    s.update(torch.arange(5.0)[None], torch.tensor([1]))
    torch.manual_seed(0)
    feats, labels = draw_virtual_features(s, torch.tensor([1.0, 1.0, 1.0]))
    # Only class 1 has statistics; its variance is 0, so the feature is exactly its mean.
    assert labels.tolist() == [1]
    torch.testing.assert_close(feats[0], torch.arange(5.0))
    assert len(draw_virtual_features(s, torch.zeros(3))[1]) == 0


def test_initial_probabilities():
    counts = torch.tensor([1000, 100, 10, 1])
    p = initial_probabilities(counts)
    assert p.sum().item() == pytest.approx(1.0)  # power 1, scale 1
    # Proportional to 1 / n: 1000 : 100 : 10 : 1 in reverse.
    torch.testing.assert_close(p / p[0], torch.tensor([1.0, 10.0, 100.0, 1000.0]))
    assert initial_probabilities(torch.full((10,), 5), scale=3.0).sum().item() == pytest.approx(3.0)
    assert torch.all(initial_probabilities(counts, scale=50.0) <= 1)  # clamped


def test_adaptation_direction():
    probs = torch.tensor([0.2, 0.2, 0.4, 0.5])
    groups = np.array([0, 0, 1, 2])
    previous = torch.tensor([1.0, 1.0, 1.0, 1.0])
    # Group 0's loss rose (2.5 > 2): x 0.9; group 1's fell: x 1.1; group 2 unchanged: kept.
    now = torch.tensor([1.0, 1.5, 0.5, 1.0])
    out = adapt_probabilities(probs, groups, now, previous)
    torch.testing.assert_close(out, torch.tensor([0.18, 0.18, 0.44, 0.5]))
    assert (
        adapt_probabilities(
            torch.tensor([0.95]), [0], torch.tensor([0.0]), torch.tensor([1.0])
        ).item()
        == 1.0
    )  # clamped at 1


def test_grouping_uses_similarity_and_falls_back(caplog):
    means = torch.tensor([[0.0, 0], [0.01, 0], [1, 1], [1.01, 1]])
    groups = class_groups(means)
    # Close means share a group (with distances as "similarities" they would be split apart).
    assert groups[0] == groups[1] and groups[2] == groups[3] and groups[0] != groups[2]
    rng = np.random.default_rng(0)
    with caplog.at_level(logging.WARNING, logger="longtail_d2.modeling.fasa"):
        fallback = class_groups(torch.tensor(rng.normal(size=(30, 4))), max_iter=2)
    assert fallback.tolist() == list(range(30))
    assert "did not converge in 2 iterations" in caplog.text
    assert "one group per class" in caplog.text


@pytest.mark.parametrize("seed, num_classes", [(0, 120), (1, 120), (2, 300)])
def test_grouping_converges_and_recovers_planted_clusters(caplog, seed, num_classes):
    """Means in 6 well-separated clusters with noise: the groups are exactly the planted ones.
    (sklearn's defaults, damping 0.5 / 200 iterations, do not converge on these cases.)"""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(6, 16)) * 10
    planted = rng.integers(0, 6, num_classes)
    means = torch.tensor(centers[planted] + rng.normal(size=(num_classes, 16)) * 0.5)
    with caplog.at_level(logging.WARNING, logger="longtail_d2.modeling.fasa"):
        groups = class_groups(means)
    assert "did not converge" not in caplog.text
    same_group = groups[:, None] == groups[None, :]
    same_planted = planted[:, None] == planted[None, :]
    assert (same_group == same_planted).all()
    assert len(set(groups.tolist())) == len(set(planted.tolist()))


def _record(image_id, *classes):
    return {"image_id": image_id, "annotations": [{"category_id": c} for c in classes]}


def test_held_out_split_keeps_every_class_in_training():
    """Long tail: class 0 in every image, classes 1..60 in 1 or 2 images each. A plain hash
    hold-out of half the images would remove every training image of some rare classes; the
    stratified one removes none, and is deterministic and independent of order."""
    dicts = [_record(i, 0) for i in range(400)]
    for c in range(1, 61):
        for j in range(1 + c % 2):
            dicts[(7 * c + 101 * j) % 400]["annotations"].append({"category_id": c})
    fraction = 0.5
    plain_held = {
        d["image_id"] for d in dicts if zlib.crc32(str(d["image_id"]).encode()) % 10000 < 5000
    }
    lost = [
        c
        for c in range(61)
        if all(d["image_id"] in plain_held for d in dicts if c in _classes(d))
    ]
    assert lost  # the case is one where the guard matters
    train, held = split_held_out(dicts, fraction)
    assert {c for d in train for c in _classes(d)} == set(range(61))
    assert len(train) + len(held) == 400 and 100 < len(held) <= len(plain_held)
    assert {d["image_id"] for d in held} <= plain_held
    assert {d["image_id"] for d in train}.isdisjoint(d["image_id"] for d in held)
    again = split_held_out(list(reversed(dicts)), fraction)
    assert [d["image_id"] for d in again[1]] == [d["image_id"] for d in reversed(held)]


def _classes(record):
    return {a["category_id"] for a in record["annotations"]}


def test_held_out_counts_per_group():
    # Class 0 in 120 images (f), class 1 in 20 (c), class 2 in 2 (r).
    dicts = [_record(i, 0) for i in range(120)] + [_record(120 + i, 1) for i in range(20)]
    dicts[0]["annotations"].append({"category_id": 2})
    dicts[130]["annotations"].append({"category_id": 2})
    held = [dicts[0], dicts[1], dicts[125]]
    # Image 0 holds f and r classes; image 1 f; image 125 c.
    assert held_out_by_group(dicts, held) == {"r": (1, 2), "c": (1, 20), "f": (2, 120)}


def test_held_out_split_is_deterministic_and_disjoint():
    dicts = [{"image_id": i} for i in range(1000)]
    train, held = split_held_out(dicts, 0.1)
    assert len(train) + len(held) == 1000 and 60 < len(held) < 140
    assert {d["image_id"] for d in train}.isdisjoint(d["image_id"] for d in held)
    assert split_held_out(list(reversed(dicts)), 0.1)[1] == list(reversed(held))
