"""End to end through train_net.py on the instant config (generated 40-image dataset)."""

import glob
import json
import math
import os

import pytest

from tests.conftest import INSTANT, read_metrics, run_train_net

KEYS = [
    f"{t}/{m}"
    for t in ("bbox", "segm")
    for m in ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
]


def _check(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory, datasets_root):
    """10 iterations + evaluation; checkpoints every 5 iterations."""
    out = str(tmp_path_factory.mktemp("train"))
    _check(run_train_net("--config-file", INSTANT, "OUTPUT_DIR", out))
    return out


def test_train_writes_checkpoints_logs_and_metrics(trained):
    metrics = read_metrics(trained)
    assert set(KEYS) <= set(metrics)
    assert all(isinstance(metrics[k], float) for k in KEYS)
    # At least one frequency group is evaluated (numbers, not nan).
    assert any(not math.isnan(metrics[f"segm/AP{g}"]) for g in "rcf")
    ckpts = sorted(os.path.basename(p) for p in glob.glob(os.path.join(trained, "model_*.pth")))
    assert ckpts == ["model_0000004.pth", "model_0000009.pth", "model_final.pth"]
    with open(os.path.join(trained, "metrics.json")) as f:  # detectron2's JSONWriter
        iters = [json.loads(line)["iteration"] for line in f if '"total_loss"' in line]
    assert iters[-1] == 9
    assert glob.glob(os.path.join(trained, "events.out.tfevents.*"))  # TensorBoard
    per_cat = json.load(
        open(os.path.join(trained, "inference/longtail_synth_val/per_category_ap.json"))
    )
    assert len(per_cat) == 12 and {r["frequency"] for r in per_cat} <= {"r", "c", "f"}
    assert os.path.isfile(os.path.join(trained, "inference/longtail_synth_val/per_category_ap.png"))
    log = open(os.path.join(trained, "log.txt")).read()
    assert "eta:" in log and "| task   |" in log and "APr" in log


def test_eval_only_reproduces_final_metrics(trained, tmp_path):
    out = str(tmp_path / "eval")
    weights = os.path.join(trained, "model_final.pth")
    _check(
        run_train_net(
            "--config-file", INSTANT, "--eval-only", "MODEL.WEIGHTS", weights, "OUTPUT_DIR", out
        )
    )
    ours, theirs = read_metrics(out), read_metrics(trained)
    for k in KEYS:
        assert (math.isnan(ours[k]) and math.isnan(theirs[k])) or ours[k] == pytest.approx(
            theirs[k], abs=1e-6
        ), k


def test_resume_continues_at_saved_iteration(trained, tmp_path):
    # An interrupted run: its last checkpoint is model_0000004 (iteration 4 done).
    out = tmp_path / "resume"
    out.mkdir()
    os.link(os.path.join(trained, "model_0000004.pth"), out / "model_0000004.pth")
    (out / "last_checkpoint").write_text("model_0000004.pth")
    _check(
        run_train_net(
            "--config-file", INSTANT, "--resume", "OUTPUT_DIR", str(out), "TEST.EVAL_PERIOD", "0"
        )
    )
    log = (out / "log.txt").read_text()
    assert "Starting training from iteration 5" in log
    with open(out / "metrics.json") as f:
        iters = [json.loads(line)["iteration"] for line in f if '"total_loss"' in line]
    assert iters and min(iters) >= 5 and iters[-1] == 9
    assert (out / "model_final.pth").exists()


def test_two_cpu_processes_train_and_evaluate(tmp_path, datasets_root):
    out = str(tmp_path / "ddp")
    _check(
        run_train_net(
            "--config-file",
            INSTANT,
            "--num-gpus",
            "2",
            "MODEL.DEVICE",
            "cpu",
            "SOLVER.MAX_ITER",
            "4",
            "OUTPUT_DIR",
            out,
        )
    )
    assert set(KEYS) <= set(read_metrics(out))
    log = open(os.path.join(out, "log.txt")).read()
    assert "Rank of current process: 0. World size: 2" in log


@pytest.mark.parametrize(
    "opts, fragments",
    [
        (["SOLVER.MAX_ITER", "abc"], ["SOLVER.MAX_ITER", "abc"]),
        (["SOLVER.MAX_ITR", "5"], ["SOLVER.MAX_ITR"]),
        (
            ["MODEL.WEIGHTS", "missing/model_final.pth"],
            ["MODEL.WEIGHTS", "missing/model_final.pth"],
        ),
        (
            [
                "DATASETS.CUSTOM",
                "[('x', 'missing/ann.json', 'missing')]",
                "DATASETS.TRAIN",
                "('x',)",
            ],
            ["missing/ann.json", "not found"],
        ),
    ],
)
def test_bad_input_fails_in_one_line_and_writes_nothing(opts, fragments, tmp_path, datasets_root):
    out = tmp_path / "never"
    proc = run_train_net("--config-file", INSTANT, "OUTPUT_DIR", str(out), *opts)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    for fragment in fragments:
        assert fragment in last, last
    assert not out.exists()


def test_missing_image_fails_in_one_line(tmp_path, datasets_root):
    from tests.conftest import write_json
    from tests.data.small_dataset import coco_dict, write_images

    images = write_images(tmp_path / "images")
    os.remove(os.path.join(images, "img4.png"))
    ann = write_json(tmp_path / "ann.json", coco_dict())
    out = tmp_path / "never"
    proc = run_train_net(
        "--config-file",
        INSTANT,
        "OUTPUT_DIR",
        str(out),
        "DATASETS.CUSTOM",
        f"[('m', '{ann}', '{images}')]",
        "DATASETS.TEST",
        "('m',)",
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "img4.png" in last and "ann.json" in last
    assert not out.exists()
