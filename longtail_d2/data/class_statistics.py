"""Per-class statistics of a training set, computed once here and handed to the model.

LVIS groups categories by the number of *training images* that contain them
(Gupta et al. 2019): rare 1-10, common 11-100, frequent > 100. One counter
(:func:`image_categories`) serves the statistics, the repeat factors of RFS
(:func:`rfs_repeat_factors`) and the dataset metadata. The predictor's ``from_config`` calls
:func:`training_class_statistics` and passes the result to the loss, PCB, FASA and BALMS; no
loss reads a dataset.
"""

import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = [
    "ClassStatistics",
    "category_frequency",
    "compute_class_statistics",
    "frequency_groups",
    "get_class_statistics",
    "image_categories",
    "rfs_repeat_factors",
    "set_class_statistics",
    "training_class_statistics",
]

logger = logging.getLogger(__name__)

RARE_MAX_IMAGES = 10
COMMON_MAX_IMAGES = 100


@dataclass
class ClassStatistics:
    """
    Attributes:
        image_count (np.ndarray): (C,) int64, training images that contain each class.
        instance_count (np.ndarray): (C,) int64, training instances of each class.
        num_images (int): training images with at least one annotation (the denominator of
            the LVIS image frequency f(c)).
        frequency (list[str]): (C,) LVIS group of each class, "r", "c" or "f".
        is_placeholder (bool): True for :meth:`placeholder` (no annotations were readable).
    """

    image_count: np.ndarray
    instance_count: np.ndarray
    num_images: int
    frequency: List[str]
    is_placeholder: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.image_count)

    @property
    def image_frequency(self) -> np.ndarray:
        """(C,) float64: f(c) = image_count[c] / num_images, in [0, 1]."""
        return self.image_count / max(self.num_images, 1)

    @classmethod
    def placeholder(cls, num_classes: int) -> "ClassStatistics":
        """The one stand-in used when the training annotations cannot be read (e.g.
        ``--eval-only`` on another machine), where the statistics buffers then come from the
        checkpoint. It is neutral for every consumer: every class in 1 of 2 images (f(c) = 1/2,
        so the Balanced Sigmoid shift log(f / (1 - f)) is 0), one instance each (uniform FASA
        probabilities and federated weights), group "f" (no EQL / DropLoss tail class)."""
        ones = np.ones(num_classes, dtype=np.int64)
        return cls(ones, ones.copy(), 2, ["f"] * num_classes, is_placeholder=True)


def frequency_groups(
    image_count: Sequence[int], thresholds: Sequence[int] = (RARE_MAX_IMAGES, COMMON_MAX_IMAGES)
) -> List[str]:
    """LVIS group ("r", "c", "f") of each class from its training image count: rare up to
    ``thresholds[0]`` images, common up to ``thresholds[1]``, frequent above."""
    rare_max, common_max = thresholds
    return ["r" if n <= rare_max else "c" if n <= common_max else "f" for n in image_count]


def image_categories(record) -> np.ndarray:
    """(k,) int64 category ids of one detectron2 record's annotations, one per instance: the
    counter behind every statistic here (an image counts once per class it contains)."""
    return np.array([a["category_id"] for a in record.get("annotations", [])], dtype=np.int64)


def compute_class_statistics(dataset_dicts, num_classes: int) -> ClassStatistics:
    """
    Args:
        dataset_dicts (list[dict]): detectron2 records with contiguous ``category_id`` in
            [0, num_classes).
    """
    per_image = [image_categories(r) for r in dataset_dicts]
    sizes = np.array([len(c) for c in per_image], dtype=np.int64)
    cats = np.concatenate(per_image) if per_image else np.zeros(0, dtype=np.int64)
    if cats.size and not 0 <= cats.min() <= cats.max() < num_classes:
        raise ValueError(
            f"category ids must be in [0, {num_classes}), got {cats.min()}..{cats.max()}"
        )
    # All images at once (per image numpy calls took seconds at LVIS size): an image counts
    # once per class, i.e. once per distinct (image, class) pair.
    image_of = np.repeat(np.arange(len(per_image), dtype=np.int64), sizes)
    pairs = np.unique(image_of * num_classes + cats)
    image_count = np.bincount(pairs % num_classes, minlength=num_classes).astype(np.int64)
    instance_count = np.bincount(cats, minlength=num_classes).astype(np.int64)
    num_images = int(np.count_nonzero(sizes))
    return ClassStatistics(image_count, instance_count, num_images, frequency_groups(image_count))


def image_class_sets(dataset_dicts):
    """([(k_i,) int64 distinct classes of each record], (C,) int64 images per class) with
    C = 1 + the largest class id seen: the counts behind the samplers' repeat factors."""
    cats = [np.unique(image_categories(r)) for r in dataset_dicts]
    num_classes = max((int(c.max()) + 1 for c in cats if len(c)), default=0)
    image_count = np.zeros(num_classes, dtype=np.int64)
    for c in cats:
        image_count[c] += 1
    return cats, image_count


def rfs_repeat_factors(dataset_dicts, repeat_thresh: float, sqrt: bool = True) -> torch.Tensor:
    """
    (N,) float32 repeat factors of RFS (LVIS paper, App. B.2) from :func:`image_categories`:
    f(c) = image_count[c] / N over the N records given, r(c) = max(1, sqrt(t / f(c))) (t / f(c)
    without ``sqrt``), r(I) = max over the classes of I (1 for an image without any). The same
    values as detectron2's ``RepeatFactorTrainingSampler.repeat_factors_from_category_frequency``.
    """
    cats, image_count = image_class_sets(dataset_dicts)
    class_factor = np.ones(len(image_count))
    seen = image_count > 0
    ratio = repeat_thresh / (image_count[seen] / len(dataset_dicts))
    class_factor[seen] = np.maximum(1.0, np.sqrt(ratio) if sqrt else ratio)
    return torch.tensor(
        [max((float(class_factor[k]) for k in c), default=1.0) for c in cats], dtype=torch.float32
    )


def set_class_statistics(dataset_name: str, stats: ClassStatistics):
    """Store counts in the dataset's metadata (``category_image_count``, ...). The frequency group
    (``category_frequency``) is set at registration: for a test set it is the training set's."""
    MetadataCatalog.get(dataset_name).set(
        category_image_count=stats.image_count.tolist(),
        category_instance_count=stats.instance_count.tolist(),
        num_annotated_images=stats.num_images,
    )


def category_frequency(dataset_name: str) -> Optional[List[str]]:
    """The ``category_frequency`` of a dataset: from its metadata (set at registration here),
    else, for detectron2's LVIS sets, the groups of detectron2's LVIS category list with the same
    class names (looked up on demand, never written into detectron2's catalogue); else None."""
    meta = MetadataCatalog.get(dataset_name)
    if "category_frequency" in meta.as_dict():
        return list(meta.category_frequency)
    classes = list(meta.get("thing_classes") or [])
    from detectron2.data.datasets.lvis_v0_5_categories import LVIS_CATEGORIES as V0_5
    from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES as V1

    for categories in (V1, V0_5):
        categories = sorted(categories, key=lambda c: c["id"])
        if classes == [c["synonyms"][0] for c in categories]:
            return [c["frequency"] for c in categories]
    return None


def _from_metadata(dataset_name: str) -> ClassStatistics:
    meta = MetadataCatalog.get(dataset_name)
    if "category_image_count" not in meta.as_dict():
        # Builtin LVIS sets: computed once from the loaded annotations, then cached.
        stats = compute_class_statistics(DatasetCatalog.get(dataset_name), len(meta.thing_classes))
        set_class_statistics(dataset_name, stats)
    image_count = np.asarray(meta.category_image_count, dtype=np.int64)
    return ClassStatistics(
        image_count,
        np.asarray(meta.category_instance_count, dtype=np.int64),
        int(meta.num_annotated_images),
        category_frequency(dataset_name) or frequency_groups(image_count),
    )


def get_class_statistics(dataset_names) -> ClassStatistics:
    """
    Statistics of the union of the given (training) datasets, which must share one class list.
    The frequency group is recomputed from the summed image counts when several sets are given.
    """
    if isinstance(dataset_names, str):
        dataset_names = [dataset_names]
    if len(dataset_names) == 0:
        raise ValueError("get_class_statistics: no dataset names given (DATASETS.TRAIN empty?)")
    parts = [_from_metadata(name) for name in dataset_names]
    classes = [MetadataCatalog.get(n).thing_classes for n in dataset_names]
    for name, cls in zip(dataset_names[1:], classes[1:]):
        if cls != classes[0]:
            raise ValueError(
                f"Datasets {dataset_names[0]!r} and {name!r} have different class lists; "
                "class statistics need one class list"
            )
    if len(parts) == 1:
        return parts[0]
    image_count = sum(p.image_count for p in parts)
    return ClassStatistics(
        image_count,
        sum(p.instance_count for p in parts),
        sum(p.num_images for p in parts),
        frequency_groups(image_count),
    )


def training_class_statistics(cfg) -> ClassStatistics:
    """Class statistics of DATASETS.TRAIN, checked against MODEL.ROI_HEADS.NUM_CLASSES, or
    :meth:`ClassStatistics.placeholder` (with a warning) when a training annotation file is
    missing: the statistics buffers of the model then come from MODEL.WEIGHTS."""
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    try:
        stats = get_class_statistics(list(cfg.DATASETS.TRAIN))
    except OSError as e:  # only a missing file; training would then fail in its data loader
        logger.warning(
            f"No class statistics of DATASETS.TRAIN ({e}); the statistics buffers must "
            "come from MODEL.WEIGHTS"
        )
        return ClassStatistics.placeholder(num_classes)
    if stats.num_classes != num_classes:
        raise ValueError(
            f"MODEL.ROI_HEADS.NUM_CLASSES is {num_classes} but "
            f"DATASETS.TRAIN {tuple(cfg.DATASETS.TRAIN)} has {stats.num_classes} classes"
        )
    return stats
