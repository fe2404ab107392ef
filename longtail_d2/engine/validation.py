"""Checks of a run's configuration, output folder and weights, made once before anything is
written: a value that cannot work is a :class:`ConfigError` naming its key and value.

:func:`check_config_values` needs only the config; :func:`check_run` also the command line
(number of workers, ``--eval-only``, ``--resume``) and the registered datasets.
"""

import glob
import math
import os
import pickle
import re
import zipfile

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY, PROPOSAL_GENERATOR_REGISTRY
from detectron2.modeling.roi_heads import (
    ROI_BOX_HEAD_REGISTRY,
    ROI_HEADS_REGISTRY,
    ROI_MASK_HEAD_REGISTRY,
    Res5ROIHeads,
)

from ..data.lvis_json import DatasetError, load_report
from ..data.image_check import check_image_files
from ..modeling.losses import LONGTAIL_LOSS_REGISTRY

__all__ = ["ConfigError", "check_config_values", "check_run", "TRAIN_SAMPLERS"]


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


# detectron2's build_detection_train_loader knows these (the Weighted* ones need keys
# detectron2's default config lacks).
TRAIN_SAMPLERS = ("TrainingSampler", "RepeatFactorTrainingSampler", "RandomSubsetTrainingSampler")

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def _finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


# (key, requirement, test of the value)
_RANGES = (
    ("SOLVER.MAX_ITER", "> 0", lambda v: v > 0),
    ("SOLVER.BASE_LR", "a finite number > 0", lambda v: _finite(v) and v > 0),
    ("SOLVER.IMS_PER_BATCH", "> 0", lambda v: v > 0),
    ("SOLVER.CHECKPOINT_PERIOD", "> 0", lambda v: v > 0),
    ("SOLVER.WARMUP_ITERS", ">= 0", lambda v: v >= 0),
    ("SOLVER.GAMMA", "a finite number > 0", lambda v: _finite(v) and v > 0),
    ("TEST.EVAL_PERIOD", ">= 0 (0: only at the end)", lambda v: v >= 0),
    ("TEST.DETECTIONS_PER_IMAGE", "> 0", lambda v: v > 0),
    ("TEST.LVIS_MAX_DETS_PER_IMAGE", "> 0", lambda v: v > 0),
    ("DATALOADER.REPEAT_THRESHOLD", "a finite number >= 0", lambda v: _finite(v) and v >= 0),
    ("DATALOADER.NUM_WORKERS", ">= 0", lambda v: v >= 0),
    ("DATALOADER.RANDOM_SUBSET_RATIO", "in (0, 1]", lambda v: _finite(v) and 0 < v <= 1),
    ("TEST.EVALUATOR", "'lvis', 'coco', 'both' or ''", lambda v: v in ("lvis", "coco", "both", "")),
    ("TEST.DETS_PER_CATEGORY", ">= 0 (0: no AP-fixed / AP-pool)", lambda v: v >= 0),
    (
        "DATASETS.FREQUENCY_GROUP_THRESHOLDS",
        "two image counts (rare max, common max) with 0 <= rare max < common max",
        lambda v: len(v) == 2 and all(isinstance(x, int) for x in v) and 0 <= v[0] < v[1],
    ),
    ("MODEL.ROI_HEADS.NUM_CLASSES", "> 0", lambda v: v > 0),
)


_MISSING = object()


def _get(cfg, key):
    node = cfg
    for part in key.split("."):
        if part not in node:
            return _MISSING  # a key of another detectron2 version
        node = node[part]
    return node


def _train_samplers(cfg):
    # RandomSubsetTrainingSampler needs DATALOADER.RANDOM_SUBSET_RATIO (newer detectron2).
    return TRAIN_SAMPLERS if "RANDOM_SUBSET_RATIO" in cfg.DATALOADER else TRAIN_SAMPLERS[:2]


def _check_registry(cfg, key, registry, what):
    name = _get(cfg, key)
    if name not in registry:
        choices = ", ".join(sorted(name for name, _ in registry))
        raise ConfigError(f"{key} = {name!r} is not a known {what}; choices: {choices}")


def check_device(device: str):
    """MODEL.DEVICE is cpu, cuda or cuda:N (N an existing GPU when one is visible)."""
    if not _DEVICE.match(device):
        raise ConfigError(f"MODEL.DEVICE = {device!r}: must be 'cpu', 'cuda' or 'cuda:N'")
    if ":" in device and torch.cuda.is_available():
        index, count = int(device.split(":")[1]), torch.cuda.device_count()
        if index >= count:
            raise ConfigError(f"MODEL.DEVICE = {device!r}: only {count} GPU(s) are visible")


def check_config_values(cfg):
    """Ranges, the LR schedule and the names looked up in registries (before any dataset)."""
    check_device(cfg.MODEL.DEVICE)
    for key, requirement, ok in _RANGES:
        value = _get(cfg, key)
        if value is not _MISSING and not ok(value):
            raise ConfigError(f"{key} = {value!r}: must be {requirement}")
    steps = list(cfg.SOLVER.STEPS)
    if steps != sorted(steps) or len(set(steps)) != len(steps) or any(s <= 0 for s in steps):
        raise ConfigError(
            f"SOLVER.STEPS = {tuple(steps)}: must be positive and strictly increasing"
        )
    if cfg.SOLVER.MAX_ITER in steps:
        # detectron2 drops steps past MAX_ITER (with a warning) but its scheduler rejects one
        # equal to it.
        raise ConfigError(
            f"SOLVER.STEPS = {tuple(steps)} contains SOLVER.MAX_ITER = {cfg.SOLVER.MAX_ITER}"
        )
    if cfg.DATALOADER.SAMPLER_TRAIN not in _train_samplers(cfg):
        raise ConfigError(
            f"DATALOADER.SAMPLER_TRAIN = {cfg.DATALOADER.SAMPLER_TRAIN!r} is not a known "
            f"sampler; choices: {', '.join(_train_samplers(cfg))}"
        )
    _check_registry(cfg, "MODEL.META_ARCHITECTURE", META_ARCH_REGISTRY, "meta architecture")
    _check_registry(cfg, "MODEL.BACKBONE.NAME", BACKBONE_REGISTRY, "backbone")
    _check_registry(
        cfg, "MODEL.PROPOSAL_GENERATOR.NAME", PROPOSAL_GENERATOR_REGISTRY, "proposal generator"
    )
    _check_registry(cfg, "MODEL.ROI_HEADS.NAME", ROI_HEADS_REGISTRY, "ROI heads")
    heads = ROI_HEADS_REGISTRY.get(cfg.MODEL.ROI_HEADS.NAME)
    # The C4 heads (and their subclasses) use res5 as box head: ROI_BOX_HEAD.NAME is unused.
    if not (isinstance(heads, type) and issubclass(heads, Res5ROIHeads)):
        _check_registry(cfg, "MODEL.ROI_BOX_HEAD.NAME", ROI_BOX_HEAD_REGISTRY, "box head")
    if cfg.MODEL.MASK_ON:
        _check_registry(cfg, "MODEL.ROI_MASK_HEAD.NAME", ROI_MASK_HEAD_REGISTRY, "mask head")
    _check_registry(cfg, "MODEL.ROI_BOX_HEAD.CLS_LOSS", LONGTAIL_LOSS_REGISTRY, "loss")


def check_batch_size(cfg, num_workers: int):
    """IMS_PER_BATCH (as detectron2's REFERENCE_WORLD_SIZE scales it) splits evenly."""
    batch, reference = cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.REFERENCE_WORLD_SIZE
    scaled = int(round(batch * num_workers / reference)) if reference else batch
    if scaled % num_workers:
        how = f" (scaled to {scaled} by SOLVER.REFERENCE_WORLD_SIZE {reference})"
        how = how if reference else ""
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH = {batch}{how} is not divisible by the {num_workers} "
            "workers (--num-gpus x --num-machines)"
        )


# ---------------------------------------------------------------------------- datasets


def _is_ours(name):
    """Registered by longtail_d2 (its files were loaded and checked at registration)."""
    return MetadataCatalog.get(name).get("is_lvis_format") is not None


def _check_builtin_files(name):
    """A dataset registered by detectron2 (e.g. lvis_v1_train) is loaded lazily: its files
    must at least exist."""
    meta = MetadataCatalog.get(name)
    json_file, image_root = meta.get("json_file"), meta.get("image_root")
    if json_file and not os.path.isfile(json_file):
        raise DatasetError(
            f"dataset {name!r}: annotation file {json_file} not found (builtin datasets are "
            "looked up under $DETECTRON2_DATASETS, default ./datasets)"
        )
    if image_root and not os.path.isdir(image_root):
        raise DatasetError(f"dataset {name!r}: image folder {image_root} not found")


def _count_annotations(name):
    return sum(len(r.get("annotations", ())) for r in DatasetCatalog.get(name))


def _check_dataset(cfg, name, role):
    """role: "training" or "evaluation"."""
    meta = MetadataCatalog.get(name)
    if not _is_ours(name):
        _check_builtin_files(name)
    classes = meta.get("thing_classes")
    if classes is not None and len(classes) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
        raise ConfigError(
            f"MODEL.ROI_HEADS.NUM_CLASSES = {cfg.MODEL.ROI_HEADS.NUM_CLASSES} but {role} dataset "
            f"{name!r} has {len(classes)} categories"
        )
    if not _is_ours(name):
        return
    report = load_report(meta.json_file)
    if role == "evaluation" and report.invalid_box_ids:
        ids = ", ".join(str(i) for i in report.invalid_box_ids[:5])
        raise DatasetError(
            f"{meta.json_file}: evaluation dataset {name!r} has {len(report.invalid_box_ids)} "
            f"annotation(s) with a non-finite or non-positive-size 'bbox' (ids {ids}): fix them; "
            "scoring against them would change AP"
        )
    if _count_annotations(name) == 0:
        reasons = []
        if report.invalid_box_ids:
            reasons.append(f"{len(report.invalid_box_ids)} dropped for an invalid 'bbox'")
        if report.num_crowd:
            reasons.append(f"{report.num_crowd} crowd (iscrowd 1), which are not used")
        why = f" ({'; '.join(reasons)})" if reasons else ""
        raise DatasetError(
            f"{meta.json_file}: {role} dataset {name!r} has no usable annotations{why}"
        )


def check_datasets(cfg, eval_only: bool):
    """Every dataset the run reads: files present, category count = NUM_CLASSES, something to
    train on / score against, no invalid boxes in evaluation ground truth."""
    if not eval_only and not cfg.DATASETS.TRAIN:
        raise ConfigError("DATASETS.TRAIN is empty: name at least one training dataset")
    if eval_only and not cfg.DATASETS.TEST:
        raise ConfigError("--eval-only with an empty DATASETS.TEST: nothing to evaluate")
    if not eval_only:
        for name in cfg.DATASETS.TRAIN:
            _check_dataset(cfg, name, "training")
        adapt = cfg.MODEL.ROI_BOX_HEAD.FASA.ADAPT_DATASET  # FASA's held-out set, if named
        if adapt and adapt not in DatasetCatalog.list():
            raise ConfigError(
                f"MODEL.ROI_BOX_HEAD.FASA.ADAPT_DATASET = {adapt!r} is not a registered dataset"
            )
        if adapt:
            _check_dataset(cfg, adapt, "training")
    for name in cfg.DATASETS.TEST:
        _check_dataset(cfg, name, "evaluation")


def check_images(cfg, eval_only: bool):
    """Image files of the datasets longtail_d2 registered: readable, complete, of the size the
    annotation file gives (DATALOADER.CHECK_IMAGES; cached by file size and mtime)."""
    if not cfg.DATALOADER.CHECK_IMAGES:
        return
    names = list(cfg.DATASETS.TEST)
    if not eval_only:
        adapt = cfg.MODEL.ROI_BOX_HEAD.FASA.ADAPT_DATASET
        names += list(cfg.DATASETS.TRAIN) + ([adapt] if adapt else [])
    for name in dict.fromkeys(names):
        if _is_ours(name):
            check_image_files(DatasetCatalog.get(name), MetadataCatalog.get(name).json_file)


# ---------------------------------------------------------------------------- output folder


def _existing_run(output_dir):
    """"finished", "unfinished" or None."""
    if os.path.isfile(os.path.join(output_dir, "model_final.pth")):
        return "finished"
    if os.path.isfile(os.path.join(output_dir, "last_checkpoint")) or glob.glob(
        os.path.join(output_dir, "model_*.pth")
    ):
        return "unfinished"
    return None


def check_output_dir(cfg, eval_only: bool, resume: bool):
    """OUTPUT_DIR can be created (nothing is created here) and holds no run that training
    would overwrite, unless --resume or OUTPUT_DIR_OVERWRITE True."""
    out = cfg.OUTPUT_DIR
    if not out:
        raise ConfigError("OUTPUT_DIR is empty")
    path = os.path.abspath(out)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"OUTPUT_DIR = {out!r} is a file, not a folder")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError(f"OUTPUT_DIR = {out!r} cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"OUTPUT_DIR = {out!r} cannot be written: {parent} is not writable")
    if eval_only or resume or cfg.OUTPUT_DIR_OVERWRITE:
        return
    state = _existing_run(path)
    if state == "finished":
        raise ConfigError(
            f"OUTPUT_DIR = {out!r} holds a finished run (model_final.pth): choose another "
            "OUTPUT_DIR, or set OUTPUT_DIR_OVERWRITE True to overwrite it"
        )
    if state == "unfinished":
        raise ConfigError(
            f"OUTPUT_DIR = {out!r} holds an unfinished or running run (last_checkpoint / "
            "model_*.pth): pass --resume to continue it, or set OUTPUT_DIR_OVERWRITE True to "
            "start over"
        )


# ---------------------------------------------------------------------------- weights


def _load_weights_file(path):
    """The checkpoint's contents; raises ConfigError naming the file if it is unreadable
    (truncated, not a torch zip / pickle file, or a zip member with a bad CRC)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()  # reads every member and checks its CRC
            if bad is not None:
                raise ValueError(f"member {bad} is corrupt")
            return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        with open(path, "rb") as f:
            if path.endswith(".pkl"):
                return pickle.load(f, encoding="latin1")
            return torch.load(f, map_location="cpu", weights_only=False)
    except Exception as e:  # any failure to read is the file's fault
        raise ConfigError(
            f"MODEL.WEIGHTS = {path}: not a readable checkpoint (truncated, corrupt, or not a "
            f"torch / pickle file: {type(e).__name__}: {' '.join(str(e).split())[:200]})"
        ) from None


def _state_dict(checkpoint):
    """{name: shape} of a detectron2 checkpoint, or None for formats whose names need
    detectron2's matching heuristics (Caffe2 / pycls files)."""
    if not isinstance(checkpoint, dict):
        return None
    model = checkpoint.get("model", checkpoint)
    if checkpoint.get("__author__") == "Caffe2" or not isinstance(model, dict):
        return None
    if "__author__" not in checkpoint and "blobs" in checkpoint:
        return None
    # DetectionCheckpointer strips DistributedDataParallel's prefix when it loads.
    return {k.removeprefix("module."): tuple(getattr(v, "shape", ())) for k, v in model.items()}


def check_eval_weights(cfg, checkpoint):
    """--eval-only: every parameter of the model is in the checkpoint with its shape, unless
    TEST.ALLOW_PARTIAL_WEIGHTS True (a missing one would be evaluated at its random init)."""
    from . import trainer_class  # the model of this config, built on the CPU

    shapes = _state_dict(checkpoint)
    if shapes is None or cfg.TEST.ALLOW_PARTIAL_WEIGHTS:
        return
    cpu_cfg = cfg.clone()
    cpu_cfg.defrost()
    cpu_cfg.MODEL.DEVICE = "cpu"
    model = trainer_class(cpu_cfg).build_model(cpu_cfg)
    problems = []
    for name, p in model.named_parameters():
        if name not in shapes:
            problems.append(f"{name} {tuple(p.shape)} missing")
        elif shapes[name] != tuple(p.shape):
            problems.append(f"{name} is {shapes[name]} in the file, {tuple(p.shape)} in the model")
    if problems:
        more = f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""
        raise ConfigError(
            f"MODEL.WEIGHTS = {cfg.MODEL.WEIGHTS} does not fit this config's model: "
            f"{'; '.join(problems[:4])}{more}. Use the config it was trained with, or set "
            "TEST.ALLOW_PARTIAL_WEIGHTS True to evaluate with randomly initialised weights"
        )


def check_weights(cfg, eval_only: bool, resume: bool):
    """A local MODEL.WEIGHTS exists and is readable (unless --resume finds a checkpoint)."""
    weights = cfg.MODEL.WEIGHTS
    resumable = resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"))
    if not weights or "://" in weights or resumable:
        return
    if not os.path.isfile(weights):
        raise ConfigError(f"MODEL.WEIGHTS = {weights}: file not found")
    checkpoint = _load_weights_file(weights)
    if eval_only:
        check_eval_weights(cfg, checkpoint)


def check_run(cfg, num_workers: int = 1, eval_only: bool = False, resume: bool = False):
    """Everything a run needs, once, before anything is written (cheapest checks first)."""
    check_batch_size(cfg, num_workers)
    check_output_dir(cfg, eval_only, resume)
    check_datasets(cfg, eval_only)
    check_weights(cfg, eval_only, resume)
    check_images(cfg, eval_only)
