"""Ground truth and predictions drawn with detectron2's Visualizer, boxes coloured by frequency
group; images chosen by id, category or group ("the rare classes' worst images"); a dataset
summary plot. Used by tools/visualize.py."""

import json
from collections import defaultdict

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.structures import BoxMode
from detectron2.utils.visualizer import Visualizer

from ..data import get_class_statistics
from .reports import GROUP_COLORS

__all__ = [
    "ViewerError",
    "frequency_groups_of",
    "load_results",
    "predict",
    "select_categories",
    "rank_images_for_group",
    "draw_image",
    "dataset_summary_figure",
]


class ViewerError(ValueError):
    """Bad input of the viewer (file, category, id); the message names it."""


def frequency_groups_of(dataset_name):
    """The frequency group ("r", "c", "f") of each contiguous class id of a dataset (a test
    set's are its training set's)."""
    return list(get_class_statistics([dataset_name]).frequency)


def _dataset_to_contiguous(metadata):
    """Dataset category id -> contiguous id (builtin LVIS sets: ids are 1-based)."""
    id_map = metadata.get("thing_dataset_id_to_contiguous_id")
    return dict(id_map) if id_map else {i + 1: i for i in range(len(metadata.thing_classes))}


def load_results(path, dataset_name):
    """
    A results file in LVIS / COCO result format (``[{"image_id", "category_id", "bbox" (XYWH),
    "score", "segmentation" (RLE, optional)}]``, dataset category ids), as
    {image_id: [{"category": contiguous id, "bbox": XYXY, "score", "segmentation"}]}.
    """
    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ViewerError(f"{path}: cannot read a results file ({e})") from None
    if not isinstance(results, list):
        raise ViewerError(f"{path}: not a list of detections (LVIS / COCO result format)")
    to_contiguous = _dataset_to_contiguous(MetadataCatalog.get(dataset_name))
    by_image = defaultdict(list)
    for i, r in enumerate(results):
        if r.get("category_id") not in to_contiguous:
            raise ViewerError(
                f"{path}: detection {i} has category_id {r.get('category_id')!r}, "
                f"not a category of {dataset_name}"
            )
        x, y, w, h = r["bbox"]
        by_image[r["image_id"]].append(
            {
                "category": to_contiguous[r["category_id"]],
                "bbox": [x, y, x + w, y + h],
                "score": float(r["score"]),
                "segmentation": r.get("segmentation"),
            }
        )
    return dict(by_image)


def predict(cfg, dataset_dicts):
    """Predictions of the model of ``cfg`` (MODEL.WEIGHTS) on the given images, in the format
    of :func:`load_results`."""
    import pycocotools.mask as mask_util
    from detectron2.engine import DefaultPredictor

    predictor = DefaultPredictor(cfg)
    by_image = {}
    for d in dataset_dicts:
        image = read_image(d["file_name"], format=cfg.INPUT.FORMAT)
        instances = predictor(image)["instances"].to("cpu")
        masks = instances.pred_masks.numpy() if instances.has("pred_masks") else None
        by_image[d["image_id"]] = [
            {
                "category": int(instances.pred_classes[i]),
                "bbox": instances.pred_boxes.tensor[i].tolist(),
                "score": float(instances.scores[i]),
                "segmentation": None
                if masks is None
                else mask_util.encode(np.asfortranarray(masks[i].astype(np.uint8))),
            }
            for i in range(len(instances))
        ]
    return by_image


def select_categories(dataset_name, names_or_ids):
    """Contiguous ids of categories given by name or dataset id."""
    meta = MetadataCatalog.get(dataset_name)
    to_contiguous = _dataset_to_contiguous(meta)
    by_name = {name: i for i, name in enumerate(meta.thing_classes)}
    chosen = []
    for x in names_or_ids:
        if x in by_name:
            chosen.append(by_name[x])
        elif x.isdigit() and int(x) in to_contiguous:
            chosen.append(to_contiguous[int(x)])
        else:
            raise ViewerError(
                f"--categories: {x!r} is neither a category name nor id of {dataset_name}"
            )
    return chosen


def _gt_boxes(d):
    return [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]]


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def rank_images_for_group(dataset_dicts, frequency, group, predictions=None, iou=0.5):
    """
    Images with ground truth of the group's categories, worst first: each such instance scores
    the best score of a same-class prediction overlapping it with box IoU >= ``iou`` (0 when
    missed); an image's badness is the mean of (1 - that score) over its instances of the group.
    Without predictions, images with the most instances of the group come first.

    Returns [(image_id, badness or instance count, number of instances of the group)].
    """
    ranked = []
    for d in dataset_dicts:
        gt = [
            (a["category_id"], box)
            for a, box in zip(d["annotations"], _gt_boxes(d))
            if frequency[a["category_id"]] == group
        ]
        if not gt:
            continue
        if predictions is None:
            ranked.append((d["image_id"], float(len(gt)), len(gt)))
            continue
        preds = predictions.get(d["image_id"], [])
        best = [
            max(
                [p["score"] for p in preds if p["category"] == c and _iou(p["bbox"], box) >= iou],
                default=0.0,
            )
            for c, box in gt
        ]
        ranked.append((d["image_id"], float(np.mean([1 - s for s in best])), len(gt)))
    return sorted(ranked, key=lambda r: (-r[1], str(r[0])))


def _colour(group):
    import matplotlib.colors as mplc

    return mplc.to_rgb(GROUP_COLORS[group])


def _panel(image, metadata, boxes, labels, masks, groups):
    vis = Visualizer(image, metadata, scale=max(1.0, 512 / max(image.shape[:2])))
    if boxes:
        vis.overlay_instances(
            boxes=np.asarray(boxes, dtype=np.float64),
            labels=labels,
            masks=masks if masks and all(m is not None for m in masks) else None,
            assigned_colors=[_colour(g) for g in groups],
            alpha=0.3,
        )
    return vis.get_output().get_image()


def draw_image(d, metadata, frequency, predictions=None, categories=None, score_threshold=0.3):
    """
    Ground truth (left) and predictions with score >= ``score_threshold`` (right, when given)
    of one dataset dict, boxes and masks coloured by ``frequency`` (the group of each class);
    only ``categories`` (contiguous ids) when given. Returns an (H, W, 3) uint8 RGB image.
    """
    names = metadata.thing_classes
    image = read_image(d["file_name"], format="RGB")
    keep = [
        (a, box)
        for a, box in zip(d["annotations"], _gt_boxes(d))
        if categories is None or a["category_id"] in categories
    ]
    gt = _panel(
        image,
        metadata,
        [box for _, box in keep],
        [f"{names[a['category_id']]} ({frequency[a['category_id']]})" for a, _ in keep],
        [a.get("segmentation") for a, _ in keep],
        [frequency[a["category_id"]] for a, _ in keep],
    )
    if predictions is None:
        return gt
    preds = [
        p
        for p in sorted(predictions.get(d["image_id"], []), key=lambda p: -p["score"])
        if p["score"] >= score_threshold and (categories is None or p["category"] in categories)
    ]
    pred = _panel(
        image,
        metadata,
        [p["bbox"] for p in preds],
        [f"{names[p['category']]} {p['score']:.2f}" for p in preds],
        [p["segmentation"] for p in preds],
        [frequency[p["category"]] for p in preds],
    )
    gap = np.full((gt.shape[0], 8, 3), 255, dtype=np.uint8)
    return np.concatenate([gt, gap, pred], axis=1)


def dataset_summary_figure(dataset_name):
    """detectron2 dicts of ``dataset_name`` -> plots.dataset_summary_figure."""
    from .plots import dataset_summary_figure as figure

    meta = MetadataCatalog.get(dataset_name)
    dicts = DatasetCatalog.get(dataset_name)
    num_classes = len(meta.thing_classes)
    instances = np.zeros(num_classes, dtype=np.int64)
    images = np.zeros(num_classes, dtype=np.int64)
    for d in dicts:
        cats = [a["category_id"] for a in d["annotations"]]
        np.add.at(instances, cats, 1)
        np.add.at(images, sorted(set(cats)), 1)
    return figure(
        list(meta.thing_classes),
        frequency_groups_of(dataset_name),
        images.tolist(),
        instances.tolist(),
        [len(d["annotations"]) for d in dicts],
    )
