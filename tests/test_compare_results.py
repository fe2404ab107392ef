"""tools/compare_results.py on run folders, evaluation metrics files and detectron2's
JSON-lines metrics.json (written here by detectron2's own JSONWriter)."""

import json
import os
import subprocess
import sys

import numpy as np
from detectron2.utils.events import EventStorage, JSONWriter
from PIL import Image

from longtail_d2.evaluation.reports import dump_json
from tests.conftest import REPO

TOOL = os.path.join(REPO, "tools", "compare_results.py")


def compare(*args):
    return subprocess.run(
        [sys.executable, TOOL, *map(str, args)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )


def markdown_rows(stdout):
    """{(run, dataset): {column: cell}} of the printed markdown table."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[(cells[0], cells[1])] = dict(zip(header, cells))
    return rows


def evaluation_folder(run, dataset, ap):
    folder = run / "inference" / dataset
    folder.mkdir(parents=True)
    metrics = {
        f"{t}/{k}": ap + i for t in ("bbox", "segm") for i, k in enumerate(("AP", "APr", "APc"))
    }
    metrics["segm/APf"] = float("nan")  # written as null by the evaluator's strict JSON
    dump_json(metrics, folder / "metrics.json")


def detectron2_jsonlines(path, evaluations):
    """detectron2's OUTPUT_DIR/metrics.json as its JSONWriter writes it in training: loss lines
    every iteration, the EvalHook's flattened results at evaluation iterations, then losses."""
    writer = JSONWriter(str(path))
    with EventStorage(0) as storage:
        for it in range(6):
            storage.iter = it
            storage.put_scalar("loss_cls", 1.0 / (it + 1))
            if it in evaluations:
                storage.put_scalars(**evaluations[it], smoothing_hint=False)
            writer.write()
    writer.close()


def test_run_folders_and_markdown_table(tmp_path):
    evaluation_folder(tmp_path / "a", "val", 10.0)
    evaluation_folder(tmp_path / "b", "val", 20.5)
    proc = compare(tmp_path / "a", tmp_path / "b", "--markdown")
    assert proc.returncode == 0, proc.stderr
    rows = markdown_rows(proc.stdout)
    a, b = rows[(str(tmp_path / "a"), "val")], rows[(str(tmp_path / "b"), "val")]
    cells = (a["bbox AP"], a["bbox APr"], a["segm APc"], a["segm APf"])
    assert cells == ("10.0", "11.0", "12.0", "n/a")
    assert b["segm AP"] == "20.5"
    # one task: its nine metrics
    single = compare("--task", "bbox", tmp_path / "a")
    assert "bbox AP50" in single.stdout and "segm AP" not in single.stdout


def test_detectron2_jsonlines_file_and_folder(tmp_path):
    """The last record holding AP keys counts (not the later loss-only lines); NaN accepted."""
    path = tmp_path / "run" / "metrics.json"
    path.parent.mkdir()
    detectron2_jsonlines(
        path,
        {
            1: {"bbox/AP": 5.0, "bbox/APr": 1.0, "segm/AP": 4.0},
            3: {"bbox/AP": 7.5, "bbox/APr": float("nan"), "segm/AP": 6.25, "segm/APf": 9.0},
        },
    )
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 6 and "bbox/AP" not in lines[-1]  # the file really is JSON lines
    for arg in (path, path.parent):  # the file, and a run folder without inference/
        proc = compare(arg)
        assert proc.returncode == 0, proc.stderr
        row = markdown_rows(proc.stdout)[(str(arg), "-")]
        assert (row["bbox AP"], row["bbox APr"], row["segm AP"], row["segm APf"]) == (
            "7.5", "n/a", "6.2", "9.0",
        )


def test_several_test_sets_and_the_plot(tmp_path):
    path = tmp_path / "metrics.json"
    detectron2_jsonlines(
        path, {2: {"val_a/segm/AP": 30.0, "val_a/segm/APr": 10.0, "val_b/segm/AP": 40.0}}
    )
    evaluation_folder(tmp_path / "r2", "val_a", 50.0)
    png = tmp_path / "bars.png"
    proc = compare(path, tmp_path / "r2", "--plot", png)
    assert proc.returncode == 0, proc.stderr
    rows = markdown_rows(proc.stdout)
    assert rows[(str(path), "val_a")]["segm APr"] == "10.0"
    assert rows[(str(path), "val_b")]["segm AP"] == "40.0"
    assert rows[(str(tmp_path / "r2"), "val_a")]["segm AP"] == "50.0"
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape[1] <= 1600 and image.shape[0] <= 800
    # three runs: three distinct bar colours of matplotlib's tab20 map
    colours = {tuple(c) for c in image.reshape(-1, 3)}
    assert {(31, 119, 180), (158, 218, 229)} <= colours


def test_errors_are_one_line(tmp_path):
    missing = compare(tmp_path)
    assert missing.returncode != 0 and "no inference" in missing.stderr
    no_ap = tmp_path / "losses.json"
    detectron2_jsonlines(no_ap, {})
    proc = compare(no_ap)
    assert proc.returncode != 0
    assert proc.stderr.strip() == f"error: {no_ap}: no bbox/AP or segm/AP values"
