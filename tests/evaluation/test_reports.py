"""Classwise table, strict JSON, CSV, history and plots of write_reports, at LVIS scale."""

import csv
import json
import math

import numpy as np
import pytest
from detectron2.utils.events import EventStorage
from PIL import Image

from longtail_d2.evaluation.plots import MAX_WIDTH_PX
from longtail_d2.evaluation.reports import classwise_table, read_history, write_reports

# matplotlib's tab:red, tab:orange, tab:blue (reports.GROUP_COLORS)
GROUP_RGB = {"r": (214, 39, 40), "c": (255, 127, 14), "f": (31, 119, 180)}
METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")


def lvis_scale_rows(n=1203):
    """Category i: group r/c/f by i % 3, AP = (i * 37) % 100 (a permutation-like spread),
    every 50th category without ground truth (AP NaN); image counts in the group's range."""
    rows = []
    for i in range(n):
        g = "rcf"[i % 3]
        count = {"r": 1 + i % 10, "c": 11 + i % 90, "f": 101 + i * 7}[g]
        ap = float("nan") if i % 50 == 0 else float((i * 37) % 100)
        rows.append(
            {"id": i + 1, "name": f"c{i}", "frequency": g, "image_count": count,
             "bbox/AP": ap, "segm/AP": ap / 2}
        )
    return rows


def metrics_for(value):
    return {t: {k: value for k in METRIC_KEYS} | {"APl": float("nan")} for t in ("bbox", "segm")}


def strict_load(path):
    def reject(constant):
        raise ValueError(f"{path}: non-standard JSON constant {constant}")

    with open(path) as f:
        return json.load(f, parse_constant=reject)


def table_cells(text):
    """(name, AP) pairs of a pipe table, row by row."""
    cells = []
    for line in text.splitlines()[2:]:
        if not line.startswith("|"):
            continue
        parts = [p.strip() for p in line.strip("|").split("|")]
        cells += [(parts[i], float(parts[i + 1])) for i in range(0, len(parts), 2) if parts[i]]
    return cells


def test_classwise_table_small_is_complete_and_sorted():
    rows = [
        {"name": "a", "frequency": "f", "bbox/AP": 50.0},
        {"name": "b", "frequency": "r", "bbox/AP": 30.0},
        {"name": "c", "frequency": "c", "bbox/AP": 5.0},
        {"name": "d", "frequency": "r", "bbox/AP": 10.0},
        {"name": "e", "frequency": "f", "bbox/AP": float("nan")},  # no ground truth
        {"name": "f", "frequency": "c", "bbox/AP": 70.0},
        {"name": "g", "frequency": "f", "bbox/AP": 20.0},
    ]
    text = classwise_table(rows, "bbox")
    header = text.splitlines()[0]
    assert header.count("category") == 3 and header.count("bbox AP") == 3
    # group order r, c, f; lowest AP first in each group; e (NaN) left out; 6 cells = 2 lines
    assert table_cells(text) == [
        ("d (r)", 10.0), ("b (r)", 30.0), ("c (c)", 5.0),
        ("f (c)", 70.0), ("g (f)", 20.0), ("a (f)", 50.0),
    ]
    assert len(text.splitlines()) == 4 and "showing" not in text


def test_classwise_table_capped_at_lvis_scale_keeps_worst_rare():
    rows = lvis_scale_rows()
    text = classwise_table(rows, "bbox")
    lines = text.splitlines()
    assert len(lines) == 2 + 60 + 1  # header, rule, 60 rows, the "showing" line
    shown = table_cells(text)
    assert len(shown) == 180
    rare = sorted(
        r["bbox/AP"] for r in rows if r["frequency"] == "r" and not math.isnan(r["bbox/AP"])
    )
    shown_rare = sorted(ap for name, ap in shown if name.endswith("(r)"))
    assert shown_rare == rare[:90]  # half of the places: the 90 lowest rare APs
    assert sum(name.endswith("(c)") for name, _ in shown) == 45
    with_gt = sum(not math.isnan(r["bbox/AP"]) for r in rows)
    assert f"of {with_gt} categories" in lines[-1] and "per_category_ap.csv" in lines[-1]


def colour_pixels(path, rgb):
    image = np.asarray(Image.open(path).convert("RGB"))
    return int((image == np.array(rgb, dtype=np.uint8)).all(axis=-1).sum())


def test_write_reports_files_history_and_tensorboard(tmp_path):
    rows = lvis_scale_rows()
    out = str(tmp_path / "inference" / "val")
    with EventStorage(start_iter=5) as storage:
        write_reports(out, metrics_for(10.0), rows, ("bbox", "segm"))
        storage.iter = 10
        written = write_reports(out, metrics_for(20.0), rows, ("bbox", "segm"))

    # strict JSON: NaN became null (json.load would accept a bare NaN; parse_constant rejects it)
    metrics = strict_load(written["metrics"])
    assert metrics["segm/AP"] == 20.0 and metrics["bbox/APl"] is None
    per_category = strict_load(written["per_category_json"])
    assert len(per_category) == 1203 and per_category[0]["bbox/AP"] is None
    assert per_category[1]["segm/AP"] == rows[1]["segm/AP"]
    with open(written["per_category_csv"]) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 1203 and table[0]["bbox/AP"] == "" and float(table[3]["bbox/AP"]) == 11.0

    # history: one strict line per evaluation, with the training iteration
    for line in open(written["history"]):
        json.loads(line, parse_constant=lambda c: pytest.fail(f"NaN in history: {line}"))
    history = read_history(out)
    assert [(h["iteration"], h["segm/AP"]) for h in history] == [(5, 10.0), (10, 20.0)]

    # plots: bounded width at 1,203 classes, each group's colour drawn (the legend of the old
    # plot had one colour and the plot was 14,435 px wide)
    for name in ("per_category_ap_png", "ap_vs_image_count_png", "history_png"):
        width, height = Image.open(written[name]).size
        assert width <= MAX_WIDTH_PX and height <= 1000, (name, width, height)
        for g, rgb in GROUP_RGB.items():
            assert colour_pixels(written[name], rgb) > 20, (name, g)

    # TensorBoard: the figure (CHW in [0, 1]) and per-group histograms of per-category AP
    images = storage._vis_data
    assert len(images) == 2 and images[0][0] == "val/segm/ap_vs_image_count"
    image = images[0][1]
    assert image.shape[0] == 3 and 0 <= image.min() and image.max() <= 1
    hist_names = {h["tag"] for h in storage._histograms}
    assert "val/segm/per_category_AP_rare" in hist_names
    assert "val/bbox/per_category_AP_frequent" in hist_names


def test_write_reports_without_ground_truth_writes_json_and_no_plot(tmp_path):
    rows = [{"id": 1, "name": "x", "frequency": "r", "image_count": 3, "bbox/AP": float("nan")}]
    written = write_reports(str(tmp_path), {"bbox": {"AP": float("nan")}}, rows, ("bbox",))
    assert strict_load(written["metrics"]) == {"bbox/AP": None}
    assert "per_category_ap_png" not in written and "ap_vs_image_count_png" not in written


def test_train_net_writes_reports_history_and_tensorboard(datasets_root, tmp_path):
    """The real entry point: two evaluations in one run (EVAL_PERIOD 1, MAX_ITER 2) give a
    history of two iterations, the classwise table in the log and the figure in TensorBoard."""
    import glob

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.conftest import INSTANT, run_train_net

    out = tmp_path / "run"
    proc = run_train_net(
        "--config-file", INSTANT, "OUTPUT_DIR", str(out), "MODEL.DEVICE", "cpu",
        "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "()", "TEST.EVAL_PERIOD", "1",
        "TEST.DETECTIONS_PER_IMAGE", "10",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = out / "inference" / "longtail_synth_val"
    history = read_history(str(folder))
    assert len(history) == 2 and history[0]["iteration"] < history[1]["iteration"]
    strict_load(folder / "metrics.json")
    assert (folder / "ap_history.png").is_file() and (folder / "per_category_ap.csv").is_file()
    log = (out / "log.txt").read_text()
    assert "per-category segm AP:" in log and "| category " in log
    events = EventAccumulator(glob.glob(str(out / "events.out.tfevents.*"))[0])
    events.Reload()
    assert "longtail_synth_val/segm/ap_vs_image_count" in events.Tags()["images"]
    assert "longtail_synth_val/segm/per_category_AP_rare" in events.Tags()["histograms"]
