"""Load and validate an LVIS- or COCO-format annotation file whose images are given by
``file_name`` (detectron2's own LVIS loader only understands LVIS's ``coco_url`` layout).

A COCO file is exhaustively annotated, so it is turned into an LVIS-style file as follows:
``neg_category_ids`` of an image = every category with no annotation in it (a verified
negative: false positives there count), ``not_exhaustive_category_ids`` = the categories of its
crowd annotations (unmatched detections there are ignored), crowd annotations are dropped
(LVIS has none), and each category's ``frequency`` comes from its image count in this file.

Rules (README "What is checked"): a ``bbox`` that is not 4 numbers is an error; one with a
non-finite value or a width or height <= 0 is dropped with a warning (and an evaluation set with
such boxes is rejected by the run's checks, see :func:`load_report`); annotation ids that are
0, negative or duplicated are renumbered 1..N in the evaluation ground truth with a warning
(faster-coco-eval and lvis-api take id 0 for "unmatched" and index annotations by id, so such
ids silently lower AP).
"""

import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain
from typing import Dict, List, Optional

import numpy as np
from detectron2.structures import BoxMode

from .class_statistics import frequency_groups

__all__ = ["DatasetError", "LoadReport", "LongTailJson", "load_longtail_json", "load_report"]

logger = logging.getLogger(__name__)


class DatasetError(ValueError):
    """Bad annotation file or image; the message names the file and the offending value."""


@dataclass
class LoadReport:
    """What loading a file dropped or changed.

    Attributes:
        invalid_box_ids: ids of the annotations dropped for a non-finite or non-positive-size bbox.
        num_crowd: crowd annotations (iscrowd 1), which are not used as instances.
        renumbered: whether the annotation ids were renumbered 1..N (0 or duplicated ids).
    """

    invalid_box_ids: List = field(default_factory=list)
    num_crowd: int = 0
    renumbered: bool = False


# The report of the latest load of each file (by absolute path), for the run's checks.
_REPORTS: Dict[str, LoadReport] = {}


def load_report(json_file: str) -> LoadReport:
    """The :class:`LoadReport` of the latest :func:`load_longtail_json` of ``json_file``."""
    return _REPORTS.get(os.path.abspath(json_file), LoadReport())


@dataclass
class LongTailJson:
    """
    Attributes:
        dataset_dicts: detectron2 records; ``category_id`` contiguous in [0, C).
        lvis_gt: the file as an LVIS-format dict (what the LVIS evaluator consumes); None when
            loaded with ``ground_truth=False``.
        categories: the category dicts sorted by id (with ``frequency``).
        id_map: dataset category id -> contiguous id.
        is_lvis_format: whether the file carried the LVIS fields itself.
        report: what loading dropped or renumbered.
    """

    dataset_dicts: List[dict]
    lvis_gt: Optional[dict]
    categories: List[dict]
    id_map: Dict[int, int]
    is_lvis_format: bool
    report: LoadReport = field(default_factory=LoadReport)


def _read_json(json_file):
    if not os.path.isfile(json_file):
        raise DatasetError(f"{json_file}: annotation file not found")
    try:
        with open(json_file) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{json_file}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{json_file}: top level must be an object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{json_file}: missing or non-list key {key!r}")
    return data


def _image_path(json_file, image_root, img):
    if "file_name" in img:
        return os.path.join(image_root, img["file_name"])
    if "coco_url" in img:  # LVIS layout: <root>/<split folder>/<name>
        return os.path.join(image_root, *img["coco_url"].split("/")[-2:])
    raise DatasetError(
        f"{json_file}: image id {img.get('id')} has neither 'file_name' nor 'coco_url'"
    )


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _short(value, n=60):
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def _segmentation_where(json_file, ann):
    return f"{json_file}: annotation id {ann.get('id')}: 'segmentation'"


def _check_polygons(json_file, ann):
    """The per-annotation (slow) check of a polygon list; raises for the first fault."""
    segm, where = ann["segmentation"], _segmentation_where(json_file, ann)
    if len(segm) == 0 or any(not isinstance(p, list) or len(p) < 6 or len(p) % 2 for p in segm):
        raise DatasetError(f"{where} is empty or has a polygon with fewer than 3 points")
    if not all(_is_number(v) and _is_finite(v) for p in segm for v in p):
        raise DatasetError(f"{where} has a polygon coordinate that is not a finite number")


def _check_rle_or_type(json_file, ann, height, width):
    """Checks a segmentation that is not a polygon list (RLE or malformed); returns whether it
    is a polygon list, whose coordinates :func:`_check_all_polygons` checks."""
    segm = ann.get("segmentation")
    if segm is None:
        return False
    if isinstance(segm, list):
        return True
    where = _segmentation_where(json_file, ann)
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        # pycocotools decodes an RLE at its own size: another size than the image's breaks
        # mask IoU and training targets.
        if list(segm["size"]) != [height, width]:
            raise DatasetError(
                f"{where} has RLE size {_short(segm['size'])}, but the image is "
                f"[height, width] = [{height}, {width}]"
            )
        return False
    raise DatasetError(f"{where} is malformed: neither polygons nor an RLE {{counts, size}}")


def _numbers_as_array(values):
    """float64 array of ``values`` if every one is an int or float (bool is not a number here)
    and fits a float; else None."""
    if not set(map(type, values)) <= {int, float}:
        return None
    try:
        return np.array(values, dtype=np.float64)
    except OverflowError:  # an int beyond float range
        return None


def _check_all_polygons(json_file, anns):
    """Every polygon of ``anns`` (annotations whose segmentation is a list): at least 3 points,
    finite numbers. One numpy pass over all coordinates (an LVIS train file has ~20 M); only when
    it fails are the annotations checked one by one, to name the first faulty one."""
    segms = [a["segmentation"] for a in anns]
    polygons = list(chain.from_iterable(segms))
    ok = set(map(type, polygons)) <= {list} and min(map(len, segms), default=1) > 0
    if ok:
        sizes = np.fromiter(map(len, polygons), dtype=np.int64, count=len(polygons))
        ok = bool(np.all((sizes >= 6) & (sizes % 2 == 0)))
    if ok:
        coords = _numbers_as_array(list(chain.from_iterable(polygons)))
        ok = coords is not None and bool(np.isfinite(coords).all())
    if not ok:
        for ann in anns:
            _check_polygons(json_file, ann)


def _is_finite(v):
    try:
        return math.isfinite(v)
    except OverflowError:  # an int beyond float range
        return False


def _box_is_valid(json_file, ann):
    """False for a non-finite or non-positive-size box (dropped); raises for a malformed one."""
    box = ann["bbox"]
    if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
        raise DatasetError(
            f"{json_file}: annotation id {ann.get('id')}: 'bbox' must be 4 numbers "
            f"[x, y, width, height], got {_short(box)}"
        )
    return all(_is_finite(v) for v in box) and box[2] > 0 and box[3] > 0


def _valid_boxes(json_file, anns):
    """(N,) bool: which ``anns`` have a finite, positive-size bbox; raises for a malformed one.
    The boxes are checked as one (N, 4) array; one by one only if that fails (to name it)."""
    boxes = [a["bbox"] for a in anns]
    array = None
    if set(map(type, boxes)) <= {list} and set(map(len, boxes)) <= {4}:
        array = _numbers_as_array(list(chain.from_iterable(boxes)))
    if array is None:
        return np.array([_box_is_valid(json_file, a) for a in anns], dtype=bool)
    array = array.reshape(-1, 4)
    with np.errstate(invalid="ignore"):
        return np.isfinite(array).all(axis=1) & (array[:, 2] > 0) & (array[:, 3] > 0)


def _check_category_lists(json_file, img, id_map):
    for key in ("neg_category_ids", "not_exhaustive_category_ids"):
        ids = img.get(key, [])
        if not isinstance(ids, list):
            raise DatasetError(f"{json_file}: image id {img['id']}: {key!r} must be a list")
        unknown = [c for c in ids if c not in id_map]
        if unknown:
            raise DatasetError(
                f"{json_file}: image id {img['id']}: {key!r} has category id {unknown[0]}, "
                "which is not among the file's categories"
            )


def _renumber_if_needed(json_file, gt_anns):
    """Annotation ids 1..N when some are not positive integers or repeat (see the module
    docstring); returns whether it renumbered."""
    ids = [a["id"] for a in gt_anns]
    if set(map(type, ids)) <= {int} and min(ids, default=1) > 0 and len(set(ids)) == len(ids):
        return False  # the usual case, without a Python step per id
    bad = [i for i in ids if not (isinstance(i, int) and not isinstance(i, bool) and i > 0)]
    repeated = {i: n for i, n in Counter(ids).items() if n > 1}
    if not bad and not repeated:
        return False
    what = []
    if bad:
        what.append(f"{len(bad)} not a positive integer (e.g. {_short(bad[0], 20)})")
    if repeated:
        first = next(iter(repeated))
        what.append(f"{len(repeated)} repeated (e.g. id {first} x{repeated[first]})")
    logger.warning(
        f"{json_file}: annotation ids must be unique positive integers ({'; '.join(what)}): "
        f"renumbered 1..{len(gt_anns)} for the evaluation (scores are otherwise unaffected)"
    )
    for new_id, ann in enumerate(gt_anns, start=1):
        ann["id"] = new_id
    return True


def load_longtail_json(
    json_file: str, image_root: str, check_images: bool = True, ground_truth: bool = True
) -> LongTailJson:
    """
    Args:
        json_file: LVIS- or COCO-format annotation file.
        image_root: folder that ``file_name`` of each image is relative to.
        check_images: raise :class:`DatasetError` if an image file is missing.
        ground_truth: also build ``lvis_gt`` (else None: training needs only the records, and
            the file's annotation dicts can then be freed).
    """
    data = _read_json(json_file)
    if not data["images"]:
        raise DatasetError(f"{json_file}: empty dataset (no images)")
    if not data["categories"]:
        raise DatasetError(f"{json_file}: no categories")
    categories = sorted(data["categories"], key=lambda c: c["id"])
    id_map = {c["id"]: i for i, c in enumerate(categories)}
    if len(id_map) != len(categories):
        raise DatasetError(f"{json_file}: duplicate category ids")
    is_lvis = any("frequency" in c for c in categories) or any(
        "neg_category_ids" in img for img in data["images"]
    )

    images = {}
    for img in data["images"]:
        for key in ("id", "height", "width"):
            if key not in img:
                raise DatasetError(f"{json_file}: image {img.get('id', img)} lacks {key!r}")
        for key in ("height", "width"):
            if not (isinstance(img[key], int) and not isinstance(img[key], bool) and img[key] > 0):
                raise DatasetError(
                    f"{json_file}: image id {img['id']}: {key!r} must be a positive integer, "
                    f"got {_short(img[key])}"
                )
        _check_category_lists(json_file, img, id_map)
        if img["id"] in images:
            raise DatasetError(f"{json_file}: duplicate image id {img['id']}")
        path = _image_path(json_file, image_root, img)
        if check_images and not os.path.isfile(path):
            raise DatasetError(f"{json_file}: image file {path} (image id {img['id']}) not found")
        images[img["id"]] = (img, path)

    anns_per_image = {i: [] for i in images}
    crowd_cats = {i: set() for i in images}
    report = LoadReport()
    anns, polygon_anns = data["annotations"], []
    required = frozenset(("id", "image_id", "category_id", "bbox"))
    for ann in anns:
        if not isinstance(ann, dict):
            raise DatasetError(f"{json_file}: annotation {_short(ann)} is not an object")
        if not ann.keys() >= required:
            key = next(k for k in ("id", "image_id", "category_id", "bbox") if k not in ann)
            raise DatasetError(f"{json_file}: annotation id {ann.get('id')} lacks {key!r}")
        if ann["category_id"] not in id_map:
            raise DatasetError(
                f"{json_file}: annotation id {ann.get('id')} has category_id "
                f"{ann['category_id']}, which is not among the file's categories"
            )
        if ann["image_id"] not in images:
            raise DatasetError(
                f"{json_file}: annotation id {ann.get('id')} refers to unknown image_id "
                f"{ann['image_id']}"
            )
        img = images[ann["image_id"]][0]
        if _check_rle_or_type(json_file, ann, img["height"], img["width"]):
            polygon_anns.append(ann)
    # Coordinates and boxes in one numpy pass each (per value in Python it was most of the time).
    _check_all_polygons(json_file, polygon_anns)
    for ann, valid in zip(anns, _valid_boxes(json_file, anns).tolist()):
        if not valid:
            report.invalid_box_ids.append(ann["id"])
        elif ann.get("iscrowd", 0):
            report.num_crowd += 1
            crowd_cats[ann["image_id"]].add(ann["category_id"])
        else:
            anns_per_image[ann["image_id"]].append(ann)
    if report.invalid_box_ids:
        ids = ", ".join(str(i) for i in report.invalid_box_ids[:5])
        logger.warning(
            f"{json_file}: {len(report.invalid_box_ids)} annotation(s) with a non-finite or "
            f"non-positive-size 'bbox' dropped (ids {ids}"
            f"{', ...' if len(report.invalid_box_ids) > 5 else ''})"
        )

    all_cat_ids = set(id_map)
    dataset_dicts, gt_images, gt_anns = [], [], []
    image_count = [0] * len(categories)
    for image_id, (img, path) in images.items():
        anns = anns_per_image[image_id]
        present = {a["category_id"] for a in anns}
        for c in present:
            image_count[id_map[c]] += 1
        if is_lvis:
            neg = list(img.get("neg_category_ids", []))
            not_exhaustive = list(img.get("not_exhaustive_category_ids", []))
        else:
            not_exhaustive = sorted(crowd_cats[image_id])
            neg = sorted(all_cat_ids - present - crowd_cats[image_id])
        if ground_truth:
            gt_images.append(
                dict(img, neg_category_ids=neg, not_exhaustive_category_ids=not_exhaustive)
            )
        objs = []
        for ann in anns:
            obj = {
                "bbox": ann["bbox"],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": id_map[ann["category_id"]],
            }
            if "segmentation" in ann:
                obj["segmentation"] = ann["segmentation"]
            objs.append(obj)
            # The GT annotation is the file's own dict (read here, referenced by no record:
            # records get new dicts, so renumbering GT ids below changes no record).
            if ground_truth and "area" not in ann:
                ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
            gt_anns.append(ann)
        dataset_dicts.append(
            {
                "file_name": path,
                "height": img["height"],
                "width": img["width"],
                "image_id": image_id,
                "neg_category_ids": neg,
                "not_exhaustive_category_ids": not_exhaustive,
                "annotations": objs,
            }
        )

    report.renumbered = _renumber_if_needed(json_file, gt_anns)
    _REPORTS[os.path.abspath(json_file)] = report
    derived = frequency_groups(image_count)
    categories = [dict(c) for c in categories]
    for c, freq, n in zip(categories, derived, image_count):
        c.setdefault("frequency", freq)
        c.setdefault("image_count", n)
    lvis_gt = None
    if ground_truth:
        lvis_gt = {"images": gt_images, "annotations": gt_anns, "categories": categories}
    return LongTailJson(dataset_dicts, lvis_gt, categories, id_map, is_lvis, report)
