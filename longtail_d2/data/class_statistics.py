"""Per-class statistics of a training set: the one place losses and samplers read them from.

LVIS groups categories by the number of *training images* that contain them
(Gupta et al. 2019): rare 1-10, common 11-100, frequent > 100.
"""

from dataclasses import dataclass
from typing import List, Sequence

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = [
    "ClassStatistics",
    "compute_class_statistics",
    "frequency_groups",
    "get_class_statistics",
    "set_class_statistics",
]

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
    """

    image_count: np.ndarray
    instance_count: np.ndarray
    num_images: int
    frequency: List[str]

    @property
    def num_classes(self) -> int:
        return len(self.image_count)

    @property
    def image_frequency(self) -> np.ndarray:
        """(C,) float64: f(c) = image_count[c] / num_images, in [0, 1]."""
        return self.image_count / max(self.num_images, 1)


def frequency_groups(image_count: Sequence[int]) -> List[str]:
    """LVIS group ("r", "c", "f") of each class from its training image count."""
    return [
        "r" if n <= RARE_MAX_IMAGES else "c" if n <= COMMON_MAX_IMAGES else "f" for n in image_count
    ]


def compute_class_statistics(dataset_dicts, num_classes: int) -> ClassStatistics:
    """
    Args:
        dataset_dicts (list[dict]): detectron2 records with contiguous ``category_id`` in
            [0, num_classes).
    """
    image_count = np.zeros(num_classes, dtype=np.int64)
    instance_count = np.zeros(num_classes, dtype=np.int64)
    num_images = 0
    for record in dataset_dicts:
        cats = np.array([a["category_id"] for a in record.get("annotations", [])], dtype=np.int64)
        if len(cats) == 0:
            continue
        num_images += 1
        np.add.at(instance_count, cats, 1)
        image_count[np.unique(cats)] += 1
    return ClassStatistics(image_count, instance_count, num_images, frequency_groups(image_count))


def set_class_statistics(dataset_name: str, stats: ClassStatistics):
    """Store counts in the dataset's metadata (``category_image_count``, ...). The frequency group
    (``category_frequency``) is set at registration: for a test set it is the training set's."""
    MetadataCatalog.get(dataset_name).set(
        category_image_count=stats.image_count.tolist(),
        category_instance_count=stats.instance_count.tolist(),
        num_annotated_images=stats.num_images,
    )


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
        list(meta.get("category_frequency") or frequency_groups(image_count)),
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
