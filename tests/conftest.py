import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTANT = os.path.join(REPO, "configs", "Tiny", "mask_rcnn_R_18_FPN_instant.yaml")


@pytest.fixture(scope="session")
def datasets_root(tmp_path_factory):
    """$DETECTRON2_DATASETS of every test: relative dataset paths resolve here."""
    root = str(tmp_path_factory.mktemp("datasets"))
    os.environ["DETECTRON2_DATASETS"] = root
    return root


def run_train_net(*args, timeout=600):
    """Runs train_net.py in a subprocess; returns the CompletedProcess (text output)."""
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "train_net.py"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )


def read_metrics(output_dir, dataset="longtail_synth_val"):
    """The evaluation's strict-JSON metrics; null (no ground truth in a group) read as NaN."""
    with open(os.path.join(output_dir, "inference", dataset, "metrics.json")) as f:
        metrics = json.load(f, parse_constant=_reject_constant)
    return {k: float("nan") if v is None else v for k, v in metrics.items()}


def _reject_constant(name):
    raise ValueError(f"metrics.json holds {name}: not strict JSON")


def write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)
    return str(path)
