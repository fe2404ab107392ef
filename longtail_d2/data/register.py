"""Dataset registration: custom LVIS/COCO-format files from ``DATASETS.CUSTOM`` and the generated
long-tailed set from ``DATASETS.SYNTHETIC``. Every dataset registered here has
``evaluator_type="lvis"`` and its class statistics in its metadata (see
:mod:`longtail_d2.data.class_statistics`); its LVIS-format ground truth is rebuilt from its
files on request (:func:`lvis_ground_truth`), not kept in a module-level table, and its records
are re-read by each ``DatasetCatalog.get`` after the first (a process keeps no copy of them)."""

import functools
import json
import logging
import os
from typing import Dict, List

from detectron2.data import DatasetCatalog, MetadataCatalog

from .class_statistics import (
    category_frequency,
    compute_class_statistics,
    frequency_groups,
    get_class_statistics,
    set_class_statistics,
)
from .lvis_json import DatasetError, LongTailJson, load_longtail_json
from .synthetic import SyntheticConfig, ensure_synthetic_dataset

__all__ = [
    "register_longtail_dataset",
    "register_datasets_from_config",
    "lvis_ground_truth",
    "release_loaded_datasets",
    "SYNTHETIC_TRAIN",
    "SYNTHETIC_VAL",
]

logger = logging.getLogger(__name__)

SYNTHETIC_TRAIN = "longtail_synth_train"
SYNTHETIC_VAL = "longtail_synth_val"
SYNTHETIC_TEST = "longtail_synth_test"  # only when DATASETS.SYNTHETIC.NUM_TEST_IMAGES > 0


def datasets_root():
    return os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))


def _resolve(path):
    """A path as given when absolute or when it exists from the working directory
    (``./data/x.json``), else under ``$DETECTRON2_DATASETS`` (detectron2's convention)."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    return os.path.join(datasets_root(), path)


# What registration loaded, kept for the first reader only (the start-up check, the train
# loader), so that a file is read once per process start instead of twice; handed over and
# forgotten, or dropped by release_loaded_datasets(). Nothing here lives for the whole run: a
# rank keeps only its serialised train set (README "Data at LVIS scale").
_HELD: Dict[tuple, LongTailJson] = {}


def _key(json_file, image_root):
    return (json_file, image_root, os.stat(json_file).st_mtime_ns)


def _load_file(json_file: str, image_root: str, hold: bool = False) -> LongTailJson:
    """The loaded file: the copy registration held if there is one, else read now. ``hold``
    keeps it for the next reader (callers must not modify the result)."""
    if not os.path.isfile(json_file):
        raise DatasetError(f"{json_file}: annotation file not found")
    key = _key(json_file, image_root)
    loaded = _HELD.get(key) or load_longtail_json(json_file, image_root, ground_truth=False)
    if hold:
        _HELD[key] = loaded
    return loaded


def _read_dataset_dicts(json_file: str, image_root: str) -> List[dict]:
    """The registered loader: the held copy handed over (and forgotten), else the file re-read,
    as detectron2's builtin LVIS registration does. The caller owns the result."""
    if not os.path.isfile(json_file):
        raise DatasetError(f"{json_file}: annotation file not found")
    loaded = _HELD.pop(_key(json_file, image_root), None)
    return (loaded or load_longtail_json(json_file, image_root, ground_truth=False)).dataset_dicts


def release_loaded_datasets():
    """Drops what registration held (after the start-up check, once the train loader is built)."""
    _HELD.clear()


def register_longtail_dataset(
    name: str, json_file: str, image_root: str, frequency_from=(), frequency_thresholds=None
):
    """
    Loads and validates an LVIS- or COCO-format file now (raising :class:`DatasetError` that
    names the file), then registers it under ``name`` with its metadata and class statistics.
    Registering the same name with the same files again is a no-op.

    Args:
        frequency_from: training dataset names whose frequency groups a COCO-format file (which
            has none) adopts if its classes are theirs; otherwise its own image counts decide.
        frequency_thresholds: (rare max, common max) training images of the groups derived
            from a COCO-format file's own image counts (DATASETS.FREQUENCY_GROUP_THRESHOLDS);
            None = LVIS's (10, 100). An LVIS-format file keeps the groups it states.
    """
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if meta.get("json_file") == json_file and meta.get("image_root") == image_root:
            return
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    loaded = _load_file(json_file, image_root, hold=True)
    dicts = loaded.dataset_dicts
    classes = [c.get("synonyms", [c["name"]])[0] for c in loaded.categories]
    frequency = [c["frequency"] for c in loaded.categories]
    stats = compute_class_statistics(dicts, len(loaded.categories))
    if not loaded.is_lvis_format and frequency_thresholds is not None:
        frequency = frequency_groups(stats.image_count, frequency_thresholds)
    if not loaded.is_lvis_format and frequency_from:
        if classes == list(MetadataCatalog.get(frequency_from[0]).thing_classes):
            frequency = get_class_statistics(list(frequency_from)).frequency
        else:
            logger.warning(
                f"{name}: classes differ from {frequency_from[0]}'s; its frequency groups come "
                "from its own image counts"
            )
    # Re-read on request, as detectron2's builtin LVIS sets: the closure holds no records.
    DatasetCatalog.register(name, functools.partial(_read_dataset_dicts, json_file, image_root))
    MetadataCatalog.get(name).set(
        thing_classes=classes,
        thing_dataset_id_to_contiguous_id=loaded.id_map,
        json_file=json_file,
        image_root=image_root,
        evaluator_type="lvis",
        category_frequency=list(frequency),
        is_lvis_format=loaded.is_lvis_format,
    )
    set_class_statistics(name, stats)


def lvis_ground_truth(dataset_name: str) -> dict:
    """The LVIS-format ground truth dict of a registered dataset (custom or builtin LVIS), found
    through its metadata (``json_file``, ``image_root``). A dataset registered here gets its
    categories' ``frequency`` from its metadata (a COCO test set: the training set's groups);
    the returned ``categories`` are new dicts, shared with nothing else. Read from the file on
    each call."""
    meta = MetadataCatalog.get(dataset_name)
    if "is_lvis_format" not in meta.as_dict():  # detectron2's builtin LVIS registration
        with open(meta.json_file) as f:
            return json.load(f)
    # Built now, for this evaluation only (not kept: a training run holds no ground truth).
    if not os.path.isfile(meta.json_file):
        raise DatasetError(f"{meta.json_file}: annotation file not found")
    gt = load_longtail_json(meta.json_file, meta.image_root, check_images=False).lvis_gt
    frequency = category_frequency(dataset_name)
    categories = [dict(c, frequency=f) for c, f in zip(gt["categories"], frequency)]
    return {**gt, "categories": categories}


def _check_triple(entry):
    if not (
        isinstance(entry, (list, tuple))
        and len(entry) == 3
        and all(isinstance(x, str) for x in entry)
    ):
        raise DatasetError(
            f"DATASETS.CUSTOM: each entry must be (name, json_file, image_root), got {entry!r}"
        )
    return entry


def register_datasets_from_config(cfg):
    """Registers the generated dataset (generating it first if absent) and DATASETS.CUSTOM."""
    if cfg.DATASETS.SYNTHETIC.ROOT:
        root = _resolve(cfg.DATASETS.SYNTHETIC.ROOT)
        ensure_synthetic_dataset(root, SyntheticConfig.from_cfg(cfg))
        register_longtail_dataset(SYNTHETIC_TRAIN, os.path.join(root, "lvis_train.json"), root)
        register_longtail_dataset(SYNTHETIC_VAL, os.path.join(root, "lvis_val.json"), root)
        if cfg.DATASETS.SYNTHETIC.NUM_TEST_IMAGES > 0:
            register_longtail_dataset(SYNTHETIC_TEST, os.path.join(root, "lvis_test.json"), root)
    custom = [_check_triple(e) for e in cfg.DATASETS.CUSTOM]
    train = list(cfg.DATASETS.TRAIN)
    # Training sets first: test sets in COCO format take their frequency groups.
    for name, json_file, image_root in sorted(custom, key=lambda e: e[0] not in train):
        frequency_from = () if name in train else [t for t in train if t in DatasetCatalog.list()]
        register_longtail_dataset(
            name,
            _resolve(json_file),
            _resolve(image_root),
            frequency_from,
            frequency_thresholds=tuple(cfg.DATASETS.FREQUENCY_GROUP_THRESHOLDS),
        )
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        if name not in DatasetCatalog.list():
            raise DatasetError(
                f"dataset {name!r} is not registered: add it to DATASETS.CUSTOM as "
                "(name, json_file, image_root) or use a builtin name such as 'lvis_v1_train'"
            )
