"""Every class of bad input through the real entry point: non-zero exit, one line on stderr
starting with ``error:`` that names the culprit, and no OUTPUT_DIR (or an untouched one).

A detectron2 import costs seconds, so the cases run in ONE subprocess that executes
``train_net.py`` as ``__main__`` (runpy) once per case, with its own ``sys.argv`` and stderr;
one case also runs as its own ``train_net.py`` process to check the real exit status.
"""

import copy
import json
import math
import os
import subprocess
import sys
import zipfile

import pytest
from PIL import Image

from tests.conftest import INSTANT, REPO, run_train_net, write_json
from tests.data.small_dataset import coco_dict, write_images

# Runs each case's argv through train_net.py's __main__ block; prints one JSON line of results.
DRIVER = r"""
import contextlib, io, json, runpy, sys, traceback
train_net, cases = sys.argv[1], json.loads(sys.argv[2])
results = {}
for name, argv in cases.items():
    err = io.StringIO()
    sys.argv = [train_net] + argv
    with contextlib.redirect_stderr(err):
        try:
            runpy.run_path(train_net, run_name="__main__")
            rc = 0
        except SystemExit as e:
            if isinstance(e.code, str):
                err.write(e.code + "\n")  # what the interpreter prints for sys.exit(str)
            rc = e.code if isinstance(e.code, int) else 1
        except BaseException:
            err.write(traceback.format_exc())
            rc = "traceback"
    results[name] = {"rc": rc, "stderr": err.getvalue()}
print("RESULTS " + json.dumps(results))
"""

PRED = "roi_heads.box_predictor"


def _dataset(root, name, edit=None, images=None):
    """A 5-image COCO file (tests/data/small_dataset.py) after ``edit(data)``."""
    data = coco_dict()
    if edit:
        edit(data)
    return write_json(os.path.join(root, f"{name}.json"), data), images or os.path.join(root, "img")


def _set_bbox(value, index=1):
    def edit(data):
        data["annotations"][index]["bbox"] = value

    return edit


def _all(field, value):
    def edit(data):
        for a in data["annotations"]:
            a[field] = copy.deepcopy(value)

    return edit


def _custom(*entries, train=(), test=(), num_classes=3):
    """Overrides for DATASETS.CUSTOM entries (name, json, image_root) used as TRAIN / TEST."""
    return [
        "DATASETS.CUSTOM", repr([tuple(e) for e in entries]),
        "DATASETS.TRAIN", repr(tuple(train)),
        "DATASETS.TEST", repr(tuple(test)),
        "MODEL.ROI_HEADS.NUM_CLASSES", str(num_classes),
    ]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, datasets_root):
    """Bad files and folders, and the cases: name -> (opts, fragments of the message, and
    the OUTPUT_DIR that must stay absent or untouched)."""
    root = str(tmp_path_factory.mktemp("bad"))
    saved_cache = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = os.path.join(root, "cache")  # image-check cache
    write_images(os.path.join(root, "img"))
    bad_img = write_images(os.path.join(root, "bad_img"))
    Image.effect_noise((32, 32), 50).convert("RGB").save(os.path.join(bad_img, "img2.png"))
    with open(os.path.join(bad_img, "img2.png"), "r+b") as f:
        f.truncate(os.path.getsize(f.name) // 2)
    small_img = write_images(os.path.join(root, "small_img"))
    Image.new("RGB", (16, 32)).save(os.path.join(small_img, "img4.png"))

    good = ("good", *_dataset(root, "good"))
    d = {
        "bbox3": _dataset(root, "bbox3", _set_bbox([1, 2, 3])),
        "bboxstr": _dataset(root, "bboxstr", _set_bbox(["1", "2", "3", "4"])),
        "noann": _dataset(root, "noann", lambda data: data.update(annotations=[])),
        "crowd": _dataset(root, "crowd", _all("iscrowd", 1)),
        "allnan": _dataset(root, "allnan", _all("bbox", [1, 2, math.nan, 4])),
        "evalnan": _dataset(root, "evalnan", _set_bbox([1, 2, math.nan, 4])),
        "evalneg": _dataset(root, "evalneg", _set_bbox([1, 2, 5, -4])),
        "negcat": _dataset(
            root, "negcat", lambda data: data["images"][1].update(neg_category_ids=[99])
        ),
        "truncimg": _dataset(root, "truncimg", images=bad_img),
        "sizeimg": _dataset(root, "sizeimg", images=small_img),
    }
    # Weights: a truncated zip, a text file, and checkpoints of the instant config's model.
    weights = os.path.join(root, "weights")
    os.makedirs(weights)
    with zipfile.ZipFile(os.path.join(weights, "ok.zip"), "w") as z:
        z.writestr("archive/data.pkl", b"x" * 5000)
    with open(os.path.join(weights, "ok.zip"), "rb") as f:
        data = f.read()
    with open(os.path.join(weights, "truncated.pth"), "wb") as f:
        f.write(data[: len(data) // 2])
    with open(os.path.join(weights, "text.pth"), "w") as f:
        f.write("not a checkpoint\n")
    ckpt = _instant_checkpoints(weights)

    finished = os.path.join(root, "finished")
    os.makedirs(finished)
    open(os.path.join(finished, "model_final.pth"), "wb").close()
    unfinished = os.path.join(root, "unfinished")
    os.makedirs(unfinished)
    open(os.path.join(unfinished, "model_0000004.pth"), "wb").close()
    with open(os.path.join(unfinished, "last_checkpoint"), "w") as f:
        f.write("model_0000004.pth")
    a_file = os.path.join(root, "a_file")
    with open(a_file, "w") as f:
        f.write("x")

    def train(name):
        return _custom((name, *d[name]), train=[name])

    def test(name):
        return _custom(good, (name, *d[name]), train=["good"], test=[name])

    cases = {
        # annotation files
        "bbox_3_numbers": (train("bbox3"), ["bbox3.json", "annotation id 2", "'bbox'"]),
        "bbox_strings": (train("bboxstr"), ["bboxstr.json", "annotation id 2", "'bbox'"]),
        "no_annotations": (train("noann"), ["noann.json", "'noann'", "no usable annotations"]),
        "only_crowd": (train("crowd"), ["crowd.json", "no usable annotations", "8 crowd"]),
        "all_bbox_nan": (train("allnan"), ["allnan.json", "no usable", "8 dropped", "'bbox'"]),
        "eval_gt_nan_box": (test("evalnan"), ["evalnan.json", "evaluation dataset", "ids 2"]),
        "eval_gt_negative_box": (test("evalneg"), ["evalneg.json", "evaluation", "ids 2"]),
        "unknown_neg_category": (
            test("negcat"), ["negcat.json", "image id 2", "'neg_category_ids'", "99"]
        ),
        # image files
        "truncated_image": (train("truncimg"), ["truncimg.json", "image id 2", "img2.png"]),
        "image_size_mismatch": (
            train("sizeimg"), ["sizeimg.json", "image id 4", "'width'", "16 x 32 pixels"]
        ),
        # datasets in the config
        "empty_train": (["DATASETS.TRAIN", "()"], ["DATASETS.TRAIN is empty"]),
        "builtin_lvis_absent": (
            ["DATASETS.TRAIN", "('lvis_v1_train',)", "MODEL.ROI_HEADS.NUM_CLASSES", "1203"],
            ["'lvis_v1_train'", "lvis_v1_train.json", "not found"],
        ),
        "fasa_adapt_dataset_unknown": (
            ["MODEL.ROI_BOX_HEAD.FASA.ADAPT_DATASET", "nope"],
            ["MODEL.ROI_BOX_HEAD.FASA.ADAPT_DATASET = 'nope'", "not a registered dataset"],
        ),
        "num_classes_too_large": (
            ["MODEL.ROI_HEADS.NUM_CLASSES", "13"],
            ["MODEL.ROI_HEADS.NUM_CLASSES = 13", "'longtail_synth_train' has 12 categories"],
        ),
        "num_classes_too_small": (
            ["MODEL.ROI_HEADS.NUM_CLASSES", "11"], ["NUM_CLASSES = 11", "12 categories"]
        ),
        # config values
        "repeat_threshold_negative": (
            ["DATALOADER.REPEAT_THRESHOLD", "-0.5"], ["DATALOADER.REPEAT_THRESHOLD = -0.5"]
        ),
        "steps_unsorted": (["SOLVER.STEPS", "(8, 4)"], ["SOLVER.STEPS = (8, 4)", "increasing"]),
        "max_iter_0": (["SOLVER.MAX_ITER", "0"], ["SOLVER.MAX_ITER = 0", "> 0"]),
        "checkpoint_period_0": (
            ["SOLVER.CHECKPOINT_PERIOD", "0"], ["SOLVER.CHECKPOINT_PERIOD = 0", "> 0"]
        ),
        "eval_period_negative": (["TEST.EVAL_PERIOD", "-1"], ["TEST.EVAL_PERIOD = -1"]),
        "base_lr_0": (["SOLVER.BASE_LR", "0.0"], ["SOLVER.BASE_LR = 0.0"]),
        "unknown_loss": (
            ["MODEL.ROI_BOX_HEAD.CLS_LOSS", "Foo"],
            ["MODEL.ROI_BOX_HEAD.CLS_LOSS = 'Foo'", "SeesawLoss", "SoftmaxCELoss"],
        ),
        "unknown_roi_heads": (
            ["MODEL.ROI_HEADS.NAME", "Foo"], ["MODEL.ROI_HEADS.NAME = 'Foo'", "LongTailROIHeads"]
        ),
        "unknown_mask_head": (
            ["MODEL.ROI_MASK_HEAD.NAME", "Foo"],
            ["MODEL.ROI_MASK_HEAD.NAME = 'Foo'", "NormedMaskRCNNConvUpsampleHead"],
        ),
        "unknown_sampler": (
            ["DATALOADER.SAMPLER_TRAIN", "Foo"],
            ["DATALOADER.SAMPLER_TRAIN = 'Foo'", "RepeatFactorTrainingSampler"],
        ),
        "device_foo": (["MODEL.DEVICE", "foo"], ["MODEL.DEVICE = 'foo'", "cuda:N"]),
        "batch_not_divisible": (
            ["--num-gpus", "2", "MODEL.DEVICE", "cpu", "SOLVER.IMS_PER_BATCH", "3"],
            ["SOLVER.IMS_PER_BATCH = 3", "2 workers"],
        ),
        # OUTPUT_DIR
        "output_dir_is_a_file": (["OUTPUT_DIR", a_file], ["a_file", "is a file"]),
        "output_dir_not_creatable": (
            ["OUTPUT_DIR", os.path.join(a_file, "out")], ["cannot be created", "a_file"]
        ),
        "output_dir_finished_run": (
            ["OUTPUT_DIR", finished], ["finished", "model_final.pth", "OUTPUT_DIR_OVERWRITE"]
        ),
        "output_dir_unfinished_run": (
            ["OUTPUT_DIR", unfinished], ["unfinished", "--resume", "OUTPUT_DIR_OVERWRITE"]
        ),
        # weights
        "weights_truncated_zip": (
            ["MODEL.WEIGHTS", os.path.join(weights, "truncated.pth")],
            ["MODEL.WEIGHTS", "truncated.pth", "not a readable checkpoint"],
        ),
        "weights_not_zip": (
            ["MODEL.WEIGHTS", os.path.join(weights, "text.pth")],
            ["text.pth", "not a readable checkpoint"],
        ),
        "eval_only_other_head": (
            ["--eval-only", "MODEL.WEIGHTS", ckpt["good"],
             "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "True"],
            [f"{PRED}.bbox_pred.weight is (48, 256) in the file, (4, 256) in the model",
             "TEST.ALLOW_PARTIAL_WEIGHTS"],
        ),
        "eval_only_missing_classifier": (
            ["--eval-only", "MODEL.WEIGHTS", ckpt["no_classifier"]],
            [f"{PRED}.cls_score.weight (13, 256) missing", "no_classifier.pth"],
        ),
        "eval_only_no_test_set": (
            ["--eval-only", "DATASETS.TEST", "()"], ["--eval-only", "DATASETS.TEST"]
        ),
    }
    untouched = {
        "output_dir_is_a_file": a_file,
        "output_dir_finished_run": finished,
        "output_dir_unfinished_run": unfinished,
    }
    yield root, cases, untouched
    if saved_cache is None:
        os.environ.pop("XDG_CACHE_HOME")
    else:
        os.environ["XDG_CACHE_HOME"] = saved_cache


def _instant_checkpoints(folder):
    """The instant config's model weights (random init) as detectron2 saves them, whole and
    without the classifier; made in a subprocess to keep this process free of the model."""
    code = (
        "import sys, torch\n"
        "from longtail_d2.engine import prepare_run, trainer_class\n"
        "cfg = prepare_run(sys.argv[1], ['MODEL.DEVICE', 'cpu'])\n"
        "sd = trainer_class(cfg).build_model(cfg).state_dict()\n"
        "torch.save({'model': sd, 'iteration': 9}, sys.argv[2] + '/good.pth')\n"
        "sd = {k: v for k, v in sd.items() if 'cls_score' not in k}\n"
        "torch.save({'model': sd}, sys.argv[2] + '/no_classifier.pth')\n"
    )
    subprocess.run([sys.executable, "-c", code, INSTANT, folder], check=True, cwd=REPO,
                   capture_output=True)
    return {k: os.path.join(folder, f"{k}.pth") for k in ("good", "no_classifier")}


@pytest.fixture(scope="module")
def results(inputs):
    root, cases, untouched = inputs
    argv = {}
    for name, (opts, _) in cases.items():
        # flags first (they precede KEY VALUE pairs); a case's own OUTPUT_DIR wins
        out = [] if "OUTPUT_DIR" in opts else ["OUTPUT_DIR", os.path.join(root, "out", name)]
        argv[name] = ["--config-file", INSTANT, *opts, *out]
    snapshot = {name: sorted(os.listdir(p)) if os.path.isdir(p) else open(p).read()
                for name, p in untouched.items()}
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, os.path.join(REPO, "train_net.py"), json.dumps(argv)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULTS ")]
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(line[-1][len("RESULTS "):]), argv, snapshot, untouched


CASE_NAMES = [
    "bbox_3_numbers", "bbox_strings", "no_annotations", "only_crowd", "all_bbox_nan",
    "eval_gt_nan_box", "eval_gt_negative_box", "unknown_neg_category", "truncated_image",
    "image_size_mismatch", "empty_train", "builtin_lvis_absent", "fasa_adapt_dataset_unknown",
    "num_classes_too_large",
    "num_classes_too_small", "repeat_threshold_negative", "steps_unsorted", "max_iter_0",
    "checkpoint_period_0", "eval_period_negative", "base_lr_0", "unknown_loss",
    "unknown_roi_heads", "unknown_mask_head", "unknown_sampler", "device_foo",
    "batch_not_divisible", "output_dir_is_a_file", "output_dir_not_creatable",
    "output_dir_finished_run", "output_dir_unfinished_run", "weights_truncated_zip",
    "weights_not_zip", "eval_only_other_head", "eval_only_missing_classifier",
    "eval_only_no_test_set",
]


def test_every_case_is_listed(inputs):
    assert sorted(inputs[1]) == sorted(CASE_NAMES)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_one_line_error_nothing_written(name, inputs, results):
    _, cases, _ = inputs
    outcome, argv, snapshot, untouched = results
    result = outcome[name]
    assert result["rc"] not in (0, "traceback"), result["stderr"][-3000:]
    last = result["stderr"].strip().splitlines()[-1]
    assert last.startswith("error: "), result["stderr"][-3000:]
    assert "Traceback" not in result["stderr"]
    for fragment in cases[name][1]:
        assert fragment in last, (fragment, last)
    out = argv[name][argv[name].index("OUTPUT_DIR") + 1]
    if name in untouched:
        p = untouched[name]
        now = sorted(os.listdir(p)) if os.path.isdir(p) else open(p).read()
        assert now == snapshot[name]
    else:
        assert not os.path.exists(out)


def test_real_process_exit_status(inputs, tmp_path):
    """The same path as a process of its own: exit status 1 and the line last on stderr."""
    root, cases, _ = inputs
    out = tmp_path / "never"
    proc = run_train_net("--config-file", INSTANT, "OUTPUT_DIR", str(out),
                         *cases["bbox_3_numbers"][0])
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "bbox3.json" in last and "annotation id 2" in last
    assert not out.exists()
