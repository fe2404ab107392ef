"""Which protocol scores a dataset, and the scoring of a set of detections under it: the one
code path of training's evaluation and of ``tools/evaluate.py``.

- ``lvis``: LVIS's federated protocol (:mod:`.lvis_eval`), for sets whose images carry
  ``neg_category_ids`` / ``not_exhaustive_category_ids`` (LVIS's federated annotation).
- ``coco``: pycocotools' protocol (:mod:`.coco_eval`) on the file as it is, for exhaustively
  annotated sets, with AP by training-frequency group.
- ``both``: the two; LVIS's numbers under ``bbox`` / ``segm``, COCO's under ``bbox_coco`` /
  ``segm_coco``.

A category's ``frequency`` field decides its r / c / f group only, never the protocol.
With ``dets_per_category`` K > 0, AP-fixed and AP-pool (:mod:`.fixed_ap`) are added under
``<task>_fixed`` and ``<task>_pool``.
"""

import functools
import json
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

from .coco_eval import evaluate_coco
from .chunked_eval import ground_truth_api
from .detections import Detections, ResultsError
from .fixed_ap import evaluate_ap_pool
from .lvis_eval import evaluate_lvis

__all__ = ["PROTOCOLS", "EvalGroundTruth", "choose_protocols", "evaluate_detections"]

logger = logging.getLogger(__name__)

PROTOCOLS = ("lvis", "coco", "both")
FEDERATED_KEYS = ("neg_category_ids", "not_exhaustive_category_ids")


def _read_json(path):
    if not os.path.isfile(path):
        raise ResultsError(f"{path}: ground-truth file not found")
    with open(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ResultsError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise ResultsError(f"{path}: not a COCO/LVIS file (images, annotations, categories)")
    return data


def _is_federated(images) -> bool:
    return any(k in img for img in images for k in FEDERATED_KEYS)


class EvalGroundTruth:
    """The ground truth of one evaluation, loaded when first needed and once only.

    Attributes:
        name: the dataset name or file, for messages.
        lvis_gt: LVIS-format dict (federated lists; each category's ``frequency``: for a
            registered set its training groups). For the LVIS protocol and AP-fixed / pool.
        coco_gt: the file as it is (crowd annotations included). For the COCO protocol.
        federated: whether the file's images carry LVIS's federated lists.
        format_reason: why ``federated`` is what it is, for the log.
    """

    def __init__(self, name, load_lvis, load_raw, federated=None, format_reason=""):
        self.name = name
        self._load_lvis, self._load_raw = load_lvis, load_raw
        self._federated, self._reason = federated, format_reason

    @staticmethod
    def from_dataset(dataset_name: str) -> "EvalGroundTruth":
        """A registered dataset (longtail_d2's or detectron2's builtin LVIS splits)."""
        from detectron2.data import MetadataCatalog

        from ..data import lvis_ground_truth

        meta = MetadataCatalog.get(dataset_name)
        load_lvis = functools.partial(lvis_ground_truth, dataset_name)
        if "is_lvis_format" not in meta.as_dict():  # detectron2's builtin LVIS registration
            return EvalGroundTruth(
                dataset_name, load_lvis, load_lvis, True, "detectron2's builtin LVIS split"
            )
        federated = meta.get("is_federated")  # set by the loader where it knows
        return EvalGroundTruth(
            dataset_name, load_lvis, functools.partial(_read_json, meta.json_file), federated
        )

    @staticmethod
    def from_json(path: str) -> "EvalGroundTruth":
        """An annotation file; groups from its categories' ``frequency``, else from its own
        image counts (as the data loader derives them)."""
        from ..data.lvis_json import load_longtail_json

        raw = _read_json(path)

        def load_lvis():
            # An LVIS file with its groups is used as is; anything else is converted (COCO:
            # absent categories become verified negatives) by the data loader.
            if _is_federated(raw["images"]) and all("frequency" in c for c in raw["categories"]):
                return raw
            return load_longtail_json(path, "", check_images=False).lvis_gt

        return EvalGroundTruth(path, load_lvis, lambda: raw)

    @functools.cached_property
    def lvis_gt(self) -> dict:
        return self._load_lvis()

    @functools.cached_property
    def coco_gt(self) -> dict:
        return self._load_raw()

    @property
    def federated(self) -> bool:
        if self._federated is None:
            self._federated = _is_federated(self.coco_gt["images"])
        return self._federated

    @property
    def format_reason(self) -> str:
        if self._reason:
            return self._reason
        lists = "neg_category_ids / not_exhaustive_category_ids"
        if self.federated:
            return f"its images carry {lists} (LVIS's federated annotation)"
        return f"its images carry no {lists} (exhaustive, COCO-style annotation)"

    @property
    def frequency(self) -> Dict[int, str]:
        return {c["id"]: c["frequency"] for c in self.lvis_gt["categories"]}


def choose_protocols(setting: str, gt: EvalGroundTruth) -> Tuple[List[str], str]:
    """
    Args:
        setting: TEST.EVALUATOR: "lvis", "coco", "both" or "" (by the dataset's annotation).
    Returns the protocols to run (the first one reports under ``bbox`` / ``segm``) and why.
    """
    if setting not in PROTOCOLS + ("",):
        raise ValueError(f"TEST.EVALUATOR: {setting!r} is not one of 'lvis', 'coco', 'both', ''")
    if setting:
        protocols = ["lvis", "coco"] if setting == "both" else [setting]
        return protocols, f"TEST.EVALUATOR is {setting!r}"
    protocol = "lvis" if gt.federated else "coco"
    return [protocol], f"TEST.EVALUATOR is '' and {gt.format_reason}"


def evaluate_detections(
    gt: EvalGroundTruth,
    dets: Detections,
    tasks: Sequence[str],
    protocols: Sequence[str],
    max_dets_per_image: int = 300,
    dets_per_category: int = 0,
) -> Tuple["OrderedDict[str, Dict[str, float]]", List[dict], List[str]]:
    """
    Returns:
        results: {key: {"AP": ..., "APf": ...}}, key = the task for the first protocol,
            ``<task>_<protocol>`` for the second, ``<task>_fixed`` / ``<task>_pool`` for AP-fixed
            and AP-pool.
        rows: one dict per category (id, name, frequency, image_count, "<key>/AP" per key with
            per-category AP), sorted by id.
        row_keys: the keys that have per-category AP.
    """
    results, per_category = OrderedDict(), OrderedDict()
    lvis_api = coco_api = None
    for task in tasks:
        if task == "segm" and len(dets) and not dets.has_masks:
            raise ResultsError(f"{gt.name}: segm evaluation needs masks in the detections")
        for i, protocol in enumerate(protocols):
            key = task if i == 0 else f"{task}_{protocol}"
            if protocol == "lvis":
                lvis_api = lvis_api or ground_truth_api(gt.lvis_gt)
                results[key], per_category[key] = evaluate_lvis(
                    gt.lvis_gt, dets, task, max_dets_per_image, gt_api=lvis_api
                )
            else:
                coco_api = coco_api or ground_truth_api(gt.coco_gt)
                results[key], per_category[key] = evaluate_coco(
                    gt.coco_gt, dets, task, gt.frequency, gt_api=coco_api
                )
        if dets_per_category > 0:
            lvis_api = lvis_api or ground_truth_api(gt.lvis_gt)
            key = f"{task}_fixed"
            results[key], per_category[key] = evaluate_lvis(
                gt.lvis_gt, dets, task, dets_per_category=dets_per_category, gt_api=lvis_api
            )
            results[f"{task}_pool"] = evaluate_ap_pool(gt.lvis_gt, dets, task, dets_per_category)
    rows = [
        {
            "id": c["id"],
            "name": c.get("name", str(c["id"])),
            "frequency": c["frequency"],
            "image_count": c.get("image_count"),
            **{f"{k}/AP": ap[c["id"]] for k, ap in per_category.items()},
        }
        for c in sorted(gt.lvis_gt["categories"], key=lambda c: c["id"])
    ]
    return results, rows, list(per_category)


def describe(gt: EvalGroundTruth, protocols, reason, num_dets: int, extra: Optional[str] = None):
    """The log line saying what is scored and how."""
    text = (
        f"Evaluating {num_dets} detections on {gt.name} with the {' and '.join(protocols)} "
        f"protocol{'s' if len(protocols) > 1 else ''} ({reason})"
    )
    return text + (f"; {extra}" if extra else "")
