"""Class exposure in a run's training stream: the replayed stream against the classes of the
batches the real training loader hands out, and benchmarks/class_exposure.py on two run folders
whose per-class AP is made equal to the exposure."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import INSTANT, REPO

SCRIPT = os.path.join(REPO, "benchmarks", "class_exposure.py")
ITERS = 7


def _cfg(seed):
    from longtail_d2.engine import prepare_run

    return prepare_run(INSTANT, ["SEED", str(seed), "SOLVER.MAX_ITER", str(ITERS),
                                 "SOLVER.STEPS", "(4,)", "DATALOADER.NUM_WORKERS", "0"])


def _from_loader(cfg, num_classes, late_from):
    """The same counts from the mapped images of build_resumable_train_loader's batches."""
    from longtail_d2.data.resumable_loader import build_resumable_train_loader

    exposure = np.zeros((num_classes, 3), dtype=np.int64)
    exposure[:, 2] = -1
    for iteration, batch in zip(range(cfg.SOLVER.MAX_ITER), build_resumable_train_loader(cfg)):
        for image in batch:
            for c in set(image["instances"].gt_classes.tolist()):
                exposure[c] += [1, iteration >= late_from, 0]
                exposure[c, 2] = iteration
    return exposure


def test_replayed_stream_equals_the_loaders_batches(datasets_root):
    from detectron2.data import get_detection_dataset_dicts

    from longtail_d2.data.class_exposure import class_exposure

    found = []
    for seed in (0, 1):
        cfg = _cfg(seed)
        dicts = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=True)
        num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        replayed = class_exposure(cfg, dicts, num_classes, late_from=4)
        np.testing.assert_array_equal(replayed, _from_loader(cfg, num_classes, 4))
        images = ITERS * cfg.SOLVER.IMS_PER_BATCH
        assert replayed[:, 0].sum() >= images  # every image holds at least one class
        assert (replayed[:, 1] <= replayed[:, 0]).all() and replayed[:, 2].max() == ITERS - 1
        found.append(replayed)
    assert not np.array_equal(*found)  # the data seed changes the stream


def test_script_correlation_on_runs_whose_ap_is_the_exposure(datasets_root, tmp_path):
    """Two run folders (seeds 0 and 1): each class's AP is set to 10 x the images of it the
    loader showed that run, so the per-class deviations correlate exactly (1.00) with images
    seen; the per-run totals are the loader's."""
    from detectron2.data import MetadataCatalog

    runs, totals = [], []
    for seed in (0, 1):
        cfg = _cfg(seed)
        num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        exposure = _from_loader(cfg, num_classes, late_from=4)
        to_contiguous = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).thing_dataset_id_to_contiguous_id
        with open(os.path.join(datasets_root, "longtail_synth_instant", "lvis_train.json")) as f:
            categories = json.load(f)["categories"]
        rows = [
            {"id": c["id"], "name": c["name"], "frequency": c["frequency"],
             "segm/AP": 10.0 * float(exposure[to_contiguous[c["id"]], 0])}
            for c in categories
        ]
        run = tmp_path / f"seed{seed}"
        (run / "inference" / "longtail_synth_val").mkdir(parents=True)
        (run / "config.yaml").write_text(cfg.dump())
        (run / "inference" / "longtail_synth_val" / "per_category_ap.json").write_text(json.dumps(rows))
        runs.append(str(run))
        rare = [to_contiguous[c["id"]] for c in categories if c["frequency"] == "r"]
        totals.append(int(exposure[rare, 0].sum()))
    proc = subprocess.run(
        [sys.executable, SCRIPT, *runs, "--dataset", "longtail_synth_val", "--group", "r"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for run, total in zip(runs, totals):
        cells = [c.strip() for c in next(l for l in lines if run in l).strip("|").split("|")]
        assert float(cells[3]) == pytest.approx(total)
    corr = next(l for l in lines if l.startswith("| images seen"))
    assert float(corr.strip("|").split("|")[1]) == pytest.approx(1.0, abs=1e-2)


def test_script_names_a_folder_that_is_not_a_run(tmp_path):
    proc = subprocess.run(
        [sys.executable, SCRIPT, str(tmp_path), "--dataset", "longtail_synth_val"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert proc.returncode == 2
    assert f"{tmp_path}: no config.yaml" in proc.stderr.strip().splitlines()[-1]
