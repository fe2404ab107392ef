#!/usr/bin/env python
"""
Loading a training annotation file of LVIS v1 train's size (not a test; prints a table).

A generated LVIS-format file (default 100,000 images, 1,270,000 annotations, 1,203 categories
with LVIS's 405 frequent / 461 common / 337 rare split by image count; polygons of a few points;
``file_name`` and ``coco_url`` on every image) is loaded, each way in its own process so that
peak memory is its own:

  longtail_d2   load_longtail_json(check_images=False) + compute_class_statistics: reading,
                checking every record and the class statistics
  detectron2    detectron2's load_lvis_json (lvis-api index, then the dataset dicts)
  longtail_d2_registered
                register_longtail_dataset (what train_net.py does; it checks that the image
                files exist, so empty files are written) and DatasetCatalog.get

and each then serialises its dicts as detectron2's train loader does (DatasetFromList,
serialize=True: one numpy buffer) and drops its own reference to them, to show what a rank
holds during training.

    nice -n 10 python benchmarks/bench_data.py [--images 100000] [--annotations 1270000]
        [--points 8] [--keep DIR] [--profile]

Target: longtail_d2 within 1.5x of detectron2's time and peak memory.
"""
import argparse
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADERS = ("longtail_d2", "detectron2", "longtail_d2_registered")
# LVIS v1 train's categories by image count: frequent (> 100), common (11-100), rare (1-10).
LVIS_V1_GROUPS = {"f": 405, "c": 461, "r": 337}


def _category_instance_counts(rng, num_annotations, groups):
    """(C,) instances of each category: rare 1-10, common 11-100, frequent the rest with a
    power-law tail (a few categories with tens of thousands of instances, as LVIS's people
    and cars), every frequent one above 100."""
    rare = rng.integers(1, 11, groups["r"])
    common = rng.integers(11, 101, groups["c"])
    rest = num_annotations - rare.sum() - common.sum() - 101 * groups["f"]
    if rest < 0:
        raise SystemExit(f"--annotations {num_annotations} too few for {groups}")
    weights = 1.0 / np.arange(1, groups["f"] + 1)
    frequent = 101 + np.floor(rest * weights / weights.sum()).astype(np.int64)
    frequent[0] += num_annotations - rare.sum() - common.sum() - frequent.sum()
    counts = np.concatenate([frequent, common, rare])
    return counts[rng.permutation(len(counts))]  # groups interleaved over ids, as in LVIS


def _json_items(items):
    return json.dumps(items, separators=(",", ":"))[1:-1]


def generate(path, num_images, num_annotations, groups, points, seed=0):
    """Writes an LVIS-format file; returns (seconds, bytes)."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    num_categories = sum(groups.values())
    counts = _category_instance_counts(rng, num_annotations, groups)
    ann_cat = rng.permutation(np.repeat(np.arange(1, num_categories + 1), counts))
    ann_img = np.sort(rng.integers(0, num_images, num_annotations))  # grouped by image
    image_ids = np.sort(rng.choice(600_000, num_images, replace=False) + 1)  # sparse, as COCO's
    widths = rng.choice([640, 480, 500, 427], num_images)
    heights = rng.choice([480, 640, 375, 333], num_images)

    # Boxes inside the image and an ellipse polygon of `points` vertices inside each box.
    w_img, h_img = widths[ann_img], heights[ann_img]
    bw = np.maximum(rng.random(num_annotations) * w_img * 0.5, 2.0)
    bh = np.maximum(rng.random(num_annotations) * h_img * 0.5, 2.0)
    x0 = rng.random(num_annotations) * (w_img - bw)
    y0 = rng.random(num_annotations) * (h_img - bh)
    theta = np.sort(rng.random((num_annotations, points)) * 2 * np.pi, axis=1)
    px = x0[:, None] + bw[:, None] * (0.5 + 0.5 * np.cos(theta))
    py = y0[:, None] + bh[:, None] * (0.5 + 0.5 * np.sin(theta))
    polygons = np.round(np.stack([px, py], axis=2).reshape(num_annotations, 2 * points), 2)
    boxes = np.round(np.stack([x0, y0, bw, bh], axis=1), 2)
    area = np.round(bw * bh * np.pi / 4, 2)

    # Image and instance counts per category, negatives / not-exhaustive ids per image.
    pairs = np.unique(ann_cat.astype(np.int64) * num_images + ann_img)
    image_count = np.bincount(pairs // num_images, minlength=num_categories + 1)[1:]
    num_neg = rng.integers(0, 12, num_images)
    num_nex = rng.integers(0, 4, num_images)
    neg = np.split(rng.integers(1, num_categories + 1, num_neg.sum()), np.cumsum(num_neg)[:-1])
    nex = np.split(rng.integers(1, num_categories + 1, num_nex.sum()), np.cumsum(num_nex)[:-1])

    categories = [
        {
            "id": c + 1,
            "name": f"category_{c + 1:04d}",
            "synonyms": [f"category_{c + 1:04d}"],
            "synset": f"category_{c + 1:04d}.n.01",
            "def": "a generated category",
            "frequency": "r" if n <= 10 else "c" if n <= 100 else "f",
            "image_count": int(n),
            "instance_count": int(k),
        }
        for c, (n, k) in enumerate(zip(image_count, counts))
    ]
    with open(path, "w") as f:
        f.write('{"info":{"description":"generated, LVIS v1 train size"},"categories":')
        f.write(json.dumps(categories, separators=(",", ":")))
        f.write(',"images":[')
        ids, ws, hs = image_ids.tolist(), widths.tolist(), heights.tolist()
        for lo in range(0, num_images, 20_000):
            chunk = []
            for i in range(lo, min(lo + 20_000, num_images)):
                name = f"{ids[i]:012d}.jpg"
                chunk.append(
                    {
                        "id": ids[i],
                        "width": ws[i],
                        "height": hs[i],
                        "file_name": f"train2017/{name}",
                        "coco_url": f"http://images.cocodataset.org/train2017/{name}",
                        "neg_category_ids": sorted(set(neg[i].tolist())),
                        "not_exhaustive_category_ids": sorted(set(nex[i].tolist())),
                        "license": 1,
                    }
                )
            f.write(("," if lo else "") + _json_items(chunk))
        f.write('],"annotations":[')
        img_of = image_ids[ann_img].tolist()
        cats, bxs, ars = ann_cat.tolist(), boxes.tolist(), area.tolist()
        for lo in range(0, num_annotations, 100_000):
            hi = min(lo + 100_000, num_annotations)
            polys = polygons[lo:hi].tolist()
            chunk = [
                {
                    "id": j + 1,
                    "image_id": img_of[j],
                    "category_id": cats[j],
                    "bbox": bxs[j],
                    "area": ars[j],
                    "segmentation": [polys[j - lo]],
                }
                for j in range(lo, hi)
            ]
            f.write(("," if lo else "") + _json_items(chunk))
        f.write("]}")
    return time.perf_counter() - start, os.path.getsize(path)


def _touch_images(json_file, folder):
    """Empty image files: registration checks that they exist (not their content)."""
    with open(json_file) as f:
        names = [img["file_name"] for img in json.load(f)["images"]]
    for name in names:
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").close()


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _release_freed_memory():
    gc.collect()
    try:  # glibc keeps freed small blocks; hand them back so RSS shows what is still held
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def measure(loader, json_file, image_root, profile=False):
    """Runs in its own process; prints one JSON line."""
    sys.path.insert(0, REPO)
    import lvis  # noqa: F401  (imported before the baseline, as detectron2 imports it lazily)
    from detectron2.data.common import DatasetFromList
    from detectron2.data.datasets.lvis import load_lvis_json

    from longtail_d2.data.class_statistics import compute_class_statistics
    from longtail_d2.data.lvis_json import load_longtail_json

    _release_freed_memory()
    base = _rss_bytes()
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    start, cpu_start = time.perf_counter(), time.process_time()
    if loader == "longtail_d2":
        loaded = load_longtail_json(json_file, image_root, check_images=False)
        dicts = loaded.dataset_dicts
        compute_class_statistics(dicts, len(loaded.categories))
    elif loader == "longtail_d2_registered":
        from detectron2.data import DatasetCatalog

        from longtail_d2.data.register import register_longtail_dataset

        register_longtail_dataset("bench_data_train", json_file, image_root)
        loaded, dicts = None, DatasetCatalog.get("bench_data_train")
    else:
        loaded = None
        # detectron2 joins image_root and the coco_url folder without a separator.
        dicts = load_lvis_json(json_file, os.path.join(image_root, ""))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    if profiler is not None:
        import pstats

        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(15)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    _release_freed_memory()
    held = _rss_bytes()
    num_annotations = sum(len(r["annotations"]) for r in dicts)
    instances = np.bincount(
        [a["category_id"] for r in dicts for a in r["annotations"]], minlength=1
    ).tolist()
    # What the train loader keeps: one serialised buffer (the dicts may then be dropped).
    serialized = DatasetFromList(dicts, copy=False, serialize=True)
    buffer_bytes = serialized._lst._lst.numel() + serialized._lst._addr.numel() * 8
    del dicts, loaded
    _release_freed_memory()
    after_serialize = _rss_bytes()
    print(
        json.dumps(
            {
                "loader": loader,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "base_rss": base,
                "peak_rss": peak,
                "held_rss": held,
                "serialized_bytes": buffer_bytes,
                "rss_after_serialize_and_drop": after_serialize,
                "num_images": len(serialized),
                "num_annotations": num_annotations,
                "instances_per_class_checksum": hash(tuple(instances)),
            }
        )
    )


def _run_measure(loader, json_file, image_root, profile):
    cmd = [sys.executable, os.path.abspath(__file__), "--measure", loader, json_file, image_root]
    proc = subprocess.run(cmd + (["--profile"] if profile else []), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{loader} failed:\n{proc.stderr[-3000:]}")
    if profile:
        sys.stderr.write(f"--- cProfile of {loader} ---\n{proc.stderr}\n")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _gb(n):
    return f"{n / 1e9:.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--annotations", type=int, default=1_270_000)
    parser.add_argument("--points", type=int, default=8, help="polygon vertices per annotation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="write the file into this folder and keep it")
    parser.add_argument("--profile", action="store_true", help="cProfile each loader (stderr)")
    parser.add_argument("--measure", nargs=3, metavar=("LOADER", "JSON", "ROOT"), help="internal")
    args = parser.parse_args()
    if args.measure:
        return measure(*args.measure, profile=args.profile)

    folder = args.keep or tempfile.mkdtemp(prefix="bench_data_")
    os.makedirs(folder, exist_ok=True)
    json_file = os.path.join(folder, "lvis_v1_train_generated.json")
    try:
        seconds, size = generate(
            json_file, args.images, args.annotations, LVIS_V1_GROUPS, args.points, args.seed
        )
        print(
            f"generated {args.images} images, {args.annotations} annotations, "
            f"{sum(LVIS_V1_GROUPS.values())} categories ({args.points}-point polygons): "
            f"{size / 1e6:.0f} MB in {seconds:.1f} s"
        )
        _touch_images(json_file, folder)
        rows = [_run_measure(name, json_file, folder, args.profile) for name in LOADERS]
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    ours, ref = rows[:2]
    keys = ("num_images", "num_annotations", "instances_per_class_checksum")
    same = all(r[k] == ref[k] for r in rows for k in keys)
    print(f"same images, annotations and instances per class: {same}")
    print(
        "| loader | wall (s) | CPU (s) | peak RSS (GB) | peak - imports (GB) "
        "| held after load (GB) | serialized (GB) | held after serialize + drop (GB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['loader']} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {_gb(r['peak_rss'])} "
            f"| {_gb(r['peak_rss'] - r['base_rss'])} | {_gb(r['held_rss'] - r['base_rss'])} "
            f"| {_gb(r['serialized_bytes'])} "
            f"| {_gb(r['rss_after_serialize_and_drop'] - r['base_rss'])} |"
        )
    added = (ours["peak_rss"] - ours["base_rss"]) / (ref["peak_rss"] - ref["base_rss"])
    print(
        f"longtail_d2 / detectron2: wall time {ours['seconds'] / ref['seconds']:.2f}x, "
        f"CPU time {ours['cpu_seconds'] / ref['cpu_seconds']:.2f}x, "
        f"peak memory {ours['peak_rss'] / ref['peak_rss']:.2f}x (above imports {added:.2f}x)"
    )


if __name__ == "__main__":
    main()
