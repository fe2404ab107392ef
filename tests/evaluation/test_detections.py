"""Detection arrays, the per-worker prediction files and the results file."""

import json

import numpy as np

from longtail_d2.evaluation.detections import (
    Detections,
    PredictionWriter,
    load_results_json,
    merge_predictions,
    write_results_json,
)
from tests.evaluation.test_lvis_eval import generated_case


def _assert_same(a: Detections, b: Detections):
    for key in vars(a):
        x, y = getattr(a, key), getattr(b, key)
        assert (x is None) == (y is None), key
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y), key


def test_results_file_round_trip_is_exact(tmp_path):
    _, results = generated_case(num_images=20)
    dets = Detections.from_results(results)
    path = str(tmp_path / "instances_results.json")
    write_results_json(dets, path, batch=7)  # several batches, one detection per line
    # A standard JSON list in the LVIS/COCO result format, masks with str counts ...
    with open(path) as f:
        loaded = json.load(f)
    assert len(loaded) == len(results)
    for got, want in zip(loaded, results):
        assert got["image_id"] == want["image_id"] and got["category_id"] == want["category_id"]
        assert got["bbox"] == want["bbox"] and got["score"] == want["score"]
        assert got["segmentation"] == want["segmentation"]
    # ... read back to the same arrays, bit for bit, by the line reader and the whole-file one.
    _assert_same(load_results_json(path, batch=5), dets)
    compact = tmp_path / "compact.json"
    compact.write_text(json.dumps(results))
    _assert_same(load_results_json(str(compact)), dets)


def test_select_gathers_masks(monkeypatch):
    from longtail_d2.evaluation import detections

    _, results = generated_case(num_images=5)
    dets = Detections.from_results(results)
    index = np.array([4, 0, 2])
    part = dets.select(index)
    want = Detections.from_results([results[i] for i in index])
    _assert_same(part, want)
    monkeypatch.setattr(detections, "GATHER_BATCH", 2)  # masks gathered a few at a time
    index = np.random.default_rng(0).permutation(len(results))[:-3]
    _assert_same(dets.select(index), Detections.from_results([results[i] for i in index]))
    assert dets.select(np.arange(len(results))) is dets  # nothing dropped: no copy
    rles = part.rles()
    assert rles[1]["counts"].decode() == results[0]["segmentation"]["counts"]


def test_two_ranks_written_as_produced_and_merged_in_rank_order(tmp_path):
    """Each worker appends its images' detections to its own files every flush_every images;
    the merge is rank 0's detections, then rank 1's, each in processing order."""
    _, results = generated_case(num_images=10)
    per_image = {}
    for r in results:
        per_image.setdefault(r["image_id"], []).append(r)
    images = sorted(per_image)
    folder = str(tmp_path / "predictions")
    writers = [PredictionWriter(folder, rank, flush_every=2) for rank in (0, 1)]
    for k, image_id in enumerate(images):  # images dealt to the two ranks alternately
        writers[k % 2].add(Detections.from_results(per_image[image_id]))
    # 5 images each: files after images 2 and 4, the 5th still in memory until flush().
    assert [len(w.files) for w in writers] == [2, 2]
    for w in writers:
        w.flush()
    files = writers[0].files + writers[1].files
    assert len(files) == 6
    merged = merge_predictions(files, remove=True)
    order = images[0::2] + images[1::2]
    _assert_same(merged, Detections.from_results([r for i in order for r in per_image[i]]))
    assert not any((tmp_path / "predictions").iterdir())
    # A new evaluation's writer removes its rank's stale files, not the other rank's.
    PredictionWriter(folder, 0, flush_every=1).add(Detections.from_results(per_image[1]))
    PredictionWriter(folder, 1, flush_every=1).add(Detections.from_results(per_image[2]))
    PredictionWriter(folder, 0)
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == ["rank001-00000.npz"]
