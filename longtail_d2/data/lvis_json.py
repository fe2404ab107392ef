"""Load and validate an LVIS- or COCO-format annotation file whose images are given by
``file_name`` (detectron2's own LVIS loader only understands LVIS's ``coco_url`` layout).

A COCO file is exhaustively annotated, so it is turned into an LVIS-style file as follows:
``neg_category_ids`` of an image = every category with no annotation in it (a verified
negative: false positives there count), ``not_exhaustive_category_ids`` = the categories of its
crowd annotations (unmatched detections there are ignored), crowd annotations are dropped
(LVIS has none), and each category's ``frequency`` comes from its image count in this file.
"""

import json
import os
from dataclasses import dataclass
from typing import Dict, List

from detectron2.structures import BoxMode

from .class_statistics import frequency_groups

__all__ = ["DatasetError", "LongTailJson", "load_longtail_json"]


class DatasetError(ValueError):
    """Bad annotation file or image; the message names the file and the offending value."""


@dataclass
class LongTailJson:
    """
    Attributes:
        dataset_dicts: detectron2 records; ``category_id`` contiguous in [0, C).
        lvis_gt: the file as an LVIS-format dict (what the LVIS evaluator consumes).
        categories: the category dicts sorted by id (with ``frequency``).
        id_map: dataset category id -> contiguous id.
        is_lvis_format: whether the file carried the LVIS fields itself.
    """

    dataset_dicts: List[dict]
    lvis_gt: dict
    categories: List[dict]
    id_map: Dict[int, int]
    is_lvis_format: bool


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


def _check_segmentation(json_file, ann):
    segm = ann.get("segmentation")
    if segm is None:
        return
    if isinstance(segm, list):
        if len(segm) == 0 or any(len(p) < 6 or len(p) % 2 for p in segm):
            raise DatasetError(
                f"{json_file}: annotation id {ann.get('id')} has an empty segmentation or a "
                "polygon with fewer than 3 points"
            )
    elif not (isinstance(segm, dict) and "counts" in segm and "size" in segm):
        raise DatasetError(
            f"{json_file}: annotation id {ann.get('id')} has a malformed segmentation"
        )


def load_longtail_json(json_file: str, image_root: str, check_images: bool = True) -> LongTailJson:
    """
    Args:
        json_file: LVIS- or COCO-format annotation file.
        image_root: folder that ``file_name`` of each image is relative to.
        check_images: raise :class:`DatasetError` if an image file is missing.
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
        if img["id"] in images:
            raise DatasetError(f"{json_file}: duplicate image id {img['id']}")
        path = _image_path(json_file, image_root, img)
        if check_images and not os.path.isfile(path):
            raise DatasetError(f"{json_file}: image file {path} (image id {img['id']}) not found")
        images[img["id"]] = (img, path)

    anns_per_image = {i: [] for i in images}
    crowd_cats = {i: set() for i in images}
    for ann in data["annotations"]:
        for key in ("id", "image_id", "category_id", "bbox"):
            if key not in ann:
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
        _check_segmentation(json_file, ann)
        if ann.get("iscrowd", 0):
            crowd_cats[ann["image_id"]].add(ann["category_id"])
        else:
            anns_per_image[ann["image_id"]].append(ann)

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
        gt_img = dict(img, neg_category_ids=neg, not_exhaustive_category_ids=not_exhaustive)
        gt_images.append(gt_img)
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
            gt_ann = dict(ann)
            gt_ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
            gt_anns.append(gt_ann)
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

    derived = frequency_groups(image_count)
    categories = [dict(c) for c in categories]
    for c, freq, n in zip(categories, derived, image_count):
        c.setdefault("frequency", freq)
        c.setdefault("image_count", n)
    lvis_gt = {"images": gt_images, "annotations": gt_anns, "categories": categories}
    return LongTailJson(dataset_dicts, lvis_gt, categories, id_map, is_lvis)
