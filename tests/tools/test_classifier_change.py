"""benchmarks/classifier_change.py: the norm ratio and cosine of each class's classifier vector
by hand, and the script's group means on two checkpoints of the instant config against the
groups in the generated dataset's json."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from longtail_d2.evaluation.classifier_change import (
    CLASSIFIER_KEYS,
    classifier_change,
    classifier_change_by_group,
)
from tests.conftest import INSTANT, REPO

SCRIPT = os.path.join(REPO, "benchmarks", "classifier_change.py")


def test_norm_ratio_and_cosine_by_hand():
    before = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    # class 0 rescaled (x2), class 1 turned by 90 degrees, class 2 turned by 45 and x sqrt(2)
    after = torch.tensor([[6.0, 8.0], [0.0, 1.0], [2.0, 2.0]])
    change = classifier_change(before, torch.tensor([-1.0, -2.0, -3.0]), after, torch.zeros(3))
    assert torch.allclose(change["norm_ratio"], torch.tensor([2.0, 1.0, math.sqrt(2)], dtype=torch.float64))
    assert torch.allclose(change["cosine"], torch.tensor([1.0, 0.0, math.sqrt(0.5)], dtype=torch.float64))
    assert change["norm_before"].tolist() == pytest.approx([5.0, 1.0, 2.0])
    assert change["norm_after"].tolist() == pytest.approx([10.0, 1.0, math.sqrt(8)])
    report = classifier_change_by_group(change, ["r", "f", "r"])
    assert set(report) == {"r", "f"}  # no common class: no row
    assert report["r"]["classes"] == 2
    assert report["r"]["norm_ratio"] == pytest.approx((2 + math.sqrt(2)) / 2)
    assert report["r"]["cosine"] == pytest.approx((1 + math.sqrt(0.5)) / 2)
    assert report["r"]["bias_before"] == pytest.approx(-2.0)
    assert report["f"]["cosine"] == pytest.approx(0.0)


def _run(*args):
    return subprocess.run(
        [sys.executable, SCRIPT, "--config-file", INSTANT, *args],
        capture_output=True, text=True, cwd=REPO,
    )


def test_script_group_means_on_checkpoints(datasets_root, tmp_path):
    num_classes, dim = 12, 5
    ratio = 1 + torch.arange(num_classes) / 10  # class c: |w| x (1 + c / 10), turned by c degrees
    angle = torch.deg2rad(torch.arange(num_classes, dtype=torch.float64))
    base = torch.zeros(num_classes + 1, dim, dtype=torch.float64)  # + a background row
    base[:, 0] = 2.0
    turned = torch.zeros_like(base)
    turned[:num_classes, 0] = 2.0 * ratio * torch.cos(angle)
    turned[:num_classes, 1] = 2.0 * ratio * torch.sin(angle)
    turned[num_classes, 0] = 100.0  # the background row is not a class
    for name, weight in (("before", base), ("after", turned)):
        bias = torch.full((num_classes + 1,), -1.0 if name == "before" else 0.5)
        torch.save({"model": dict(zip(CLASSIFIER_KEYS, (weight.float(), bias)))},
                   tmp_path / f"{name}.pth")
    proc = _run("--before", str(tmp_path / "before.pth"), "--after", str(tmp_path / "after.pth"))
    assert proc.returncode == 0, proc.stderr
    rows = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in ("rare", "common", "frequent"):
            rows[cells[0][0]] = cells[1:]
    assert {"r", "c"} <= set(rows)  # the instant set has no frequent class: no row
    with open(os.path.join(datasets_root, "longtail_synth_instant", "lvis_train.json")) as f:
        categories = sorted(json.load(f)["categories"], key=lambda c: c["id"])
    assert len(categories) == num_classes
    for group in "rcf":
        members = [i for i, c in enumerate(categories) if c["frequency"] == group]
        if not members:
            assert group not in rows
            continue
        expected = [
            len(members),
            float(ratio[members].mean()),
            float(torch.cos(angle[members]).mean()),
            -1.0,
            0.5,
            2.0,
            float((2.0 * ratio[members]).mean()),
        ]
        assert int(rows[group][0]) == expected[0]
        assert [float(x) for x in rows[group][1:]] == pytest.approx(expected[1:], abs=1e-3)


def test_script_names_a_missing_classifier(datasets_root, tmp_path):
    torch.save({"model": {"backbone.weight": torch.zeros(1)}}, tmp_path / "a.pth")
    proc = _run("--before", str(tmp_path / "a.pth"), "--after", str(tmp_path / "a.pth"))
    assert proc.returncode != 0
    assert f"{tmp_path / 'a.pth'}: no {CLASSIFIER_KEYS[0]}" in proc.stderr.strip().splitlines()[-1]
    proc = _run("--before", str(tmp_path / "none.pth"), "--after", str(tmp_path / "a.pth"))
    assert proc.returncode != 0 and "none.pth: no such file" in proc.stderr
