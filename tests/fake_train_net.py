#!/usr/bin/env python
"""A stand-in for train_net.py in tests/test_benchmark_tool.py: no training, only what the
benchmark runner reads. Parses its argv with train_net.py's parser (detectron2's
``default_argument_parser``: options after the first KEY belong to the overrides, so a
misplaced ``--resume`` fails as it would in train_net.py), appends its argv to
$FAKE_TRAIN_CALLS, fails if MODEL.WEIGHTS names a missing file, and writes OUTPUT_DIR/
model_final.pth and inference/<dataset>/metrics.json for each dataset of $FAKE_TRAIN_DATASETS
(comma-separated) with segm/APr = 10 + 2 * SEED, segm/APc = 20 + SEED, segm/APf = 30 +
TEST.DETECTIONS_PER_IMAGE / 100 (0 if not given), every other value 30. With --eval-only it
writes no model_final.pth (MODEL.WEIGHTS must exist).
$FAKE_TRAIN_FAIL=<seed> makes that seed exit 1 before writing anything."""
import json
import os
import sys

from detectron2.engine import default_argument_parser

args = sys.argv[1:]
parsed = default_argument_parser().parse_args(args)
opts = parsed.opts
if len(opts) % 2:
    sys.exit(f"error: command-line override: odd length: {opts}")
kv = dict(zip(opts[::2], opts[1::2]))
with open(os.environ["FAKE_TRAIN_CALLS"], "a") as f:
    f.write(json.dumps(args) + "\n")
seed = int(kv["SEED"])
if os.environ.get("FAKE_TRAIN_FAIL") == str(seed):
    sys.exit("error: planned failure")
weights = kv.get("MODEL.WEIGHTS", "")
if weights and not os.path.isfile(weights):
    sys.exit(f"error: MODEL.WEIGHTS: {weights} not found")
out = kv["OUTPUT_DIR"]
os.makedirs(out, exist_ok=True)
if parsed.eval_only and not weights:
    sys.exit("error: --eval-only needs MODEL.WEIGHTS")
if not parsed.eval_only:
    open(os.path.join(out, "model_final.pth"), "w").close()
for dataset in os.environ["FAKE_TRAIN_DATASETS"].split(","):
    folder = os.path.join(out, "inference", dataset)
    os.makedirs(folder, exist_ok=True)
    metrics = {f"{t}/{k}": 30.0 for t in ("bbox", "segm") for k in ("AP", "APr", "APc", "APf")}
    metrics.update({"segm/APr": 10.0 + 2 * seed, "segm/APc": 20.0 + seed})
    metrics["segm/APf"] = 30.0 + float(kv.get("TEST.DETECTIONS_PER_IMAGE", 0)) / 100
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        json.dump(metrics, f)
