"""Detectron2 evaluator of longtail_d2: LVIS and / or COCO protocol (:mod:`.protocols`) on any
dataset registered by longtail_d2 or detectron2's builtin LVIS splits.

Each worker keeps its detections as arrays and appends them to its own files in
``<output_dir>/predictions/`` every few hundred images; the main process merges them, writes
``instances_results.json`` (LVIS/COCO result format, what ``tools/evaluate.py`` re-scores),
scores it and writes the reports (``metrics.json``, ``per_category_ap.json`` / ``.csv``, plots).
"""

import logging
import os
from collections import OrderedDict

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from .detections import Detections, PredictionWriter, merge_predictions, write_results_json
from .protocols import EvalGroundTruth, choose_protocols, describe, evaluate_detections
from .reports import frequency_group_table, write_reports

__all__ = [
    "LongTailLVISEvaluator",
    "LongTailEvaluator",
    "build_longtail_evaluator",
    "detection_cap_warning",
    "RESULTS_FILE",
]

RESULTS_FILE = "instances_results.json"
PREDICTIONS_FOLDER = "predictions"


def instances_to_detections(instances, image_id: int, class_to_dataset_id) -> Detections:
    """detectron2 ``Instances`` (on any device) -> :class:`Detections` with dataset category
    ids; boxes XYXY -> XYWH as detectron2's ``instances_to_coco_json``, masks to RLE in one
    pycocotools call."""
    from pycocotools import mask as mask_util

    instances = instances.to(torch.device("cpu"))
    n = len(instances)
    boxes = instances.pred_boxes.tensor.numpy().reshape(n, 4).copy()
    boxes[:, 2:] -= boxes[:, :2]  # in float32, as detectron2's BoxMode.convert
    rles = None
    if instances.has("pred_masks"):
        masks = instances.pred_masks.numpy().astype(np.uint8)
        rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0))) if n else []
    return Detections.from_arrays(
        np.full(n, image_id, np.int64),
        class_to_dataset_id[instances.pred_classes.numpy()],
        instances.scores.numpy(),
        boxes,
        rles,
    )


def class_to_dataset_ids(metadata) -> np.ndarray:
    """(C,) dataset category id of each contiguous class id."""
    id_map = metadata.get("thing_dataset_id_to_contiguous_id")
    if id_map:
        out = np.zeros(len(id_map), np.int64)
        for dataset_id, contiguous in id_map.items():
            out[contiguous] = dataset_id
        return out
    # detectron2's builtin LVIS: no map, category ids are 1-based
    return np.arange(1, len(metadata.thing_classes) + 1, dtype=np.int64)


class LongTailLVISEvaluator(DatasetEvaluator):
    def __init__(
        self,
        dataset_name,
        output_dir=None,
        *,
        tasks=("bbox", "segm"),
        max_dets_per_image=300,
        distributed=True,
        protocol="",
        dets_per_category=0,
        flush_every=200,
    ):
        """
        Args:
            dataset_name: a registered dataset whose metadata has ``json_file``.
            output_dir: where the predictions, results file and reports go; None = nowhere
                (detections are then gathered in memory).
            tasks: "bbox" and / or "segm".
            max_dets_per_image: detections per image kept by the LVIS protocol (LVIS: 300).
            protocol: "lvis", "coco", "both" or "" (by the dataset's annotation), see
                :func:`~.protocols.choose_protocols`.
            dets_per_category: > 0 adds AP-fixed and AP-pool with this per-category budget.
            flush_every: images between two writes of a worker's predictions file.
        """
        self._tasks = tuple(tasks)
        self._dataset_name = dataset_name
        self._metadata = MetadataCatalog.get(dataset_name)
        self._output_dir = output_dir
        self._max_dets = max_dets_per_image
        self._distributed = distributed
        self._protocol = protocol
        self._dets_per_category = dets_per_category
        self._flush_every = flush_every
        self._class_ids = class_to_dataset_ids(self._metadata)
        self._logger = logging.getLogger(__name__)

    def reset(self):
        self._in_memory = []
        self._writer = None
        if self._output_dir:
            folder = os.path.join(self._output_dir, PREDICTIONS_FOLDER)
            rank = comm.get_rank() if self._distributed else 0
            self._writer = PredictionWriter(folder, rank, self._flush_every)

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            dets = instances_to_detections(out["instances"], inp["image_id"], self._class_ids)
            if self._writer is not None:
                self._writer.add(dets)
            else:
                self._in_memory.append(dets)

    def _collect(self):
        """All workers' detections on the main process (None elsewhere)."""
        if self._writer is not None:
            self._writer.flush()
            files = self._writer.files
            if self._distributed:
                comm.synchronize()
                files = comm.gather(files, dst=0)
                if not comm.is_main_process():
                    return None
                files = [f for rank_files in files for f in rank_files]
            missing = [f for f in files if not os.path.isfile(f)]
            if missing:
                raise RuntimeError(
                    f"{missing[0]}: a worker's predictions are not visible from the main process "
                    "(OUTPUT_DIR must be a folder shared by all machines)"
                )
            dets = merge_predictions(files, remove=True)
            folder = os.path.join(self._output_dir, PREDICTIONS_FOLDER)
            if os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)
            return dets
        parts = self._in_memory
        if self._distributed:
            comm.synchronize()
            parts = comm.gather(Detections.concatenate(parts), dst=0)
            if not comm.is_main_process():
                return None
        return Detections.concatenate(parts)

    def evaluate(self):
        dets = self._collect()
        if dets is None:
            return {}
        if self._output_dir:
            write_results_json(dets, os.path.join(self._output_dir, RESULTS_FILE))
        gt = EvalGroundTruth.from_dataset(self._dataset_name)
        results, _rows = evaluate_and_report(
            gt,
            dets,
            self._tasks,
            self._protocol,
            self._output_dir,
            self._logger,
            max_dets_per_image=self._max_dets,
            dets_per_category=self._dets_per_category,
        )
        return results


LongTailEvaluator = LongTailLVISEvaluator


def evaluate_and_report(
    gt, dets, tasks, protocol, output_dir, logger, *, max_dets_per_image=300, dets_per_category=0
):
    """Scores ``dets``, logs the tables and writes the reports into ``output_dir`` (if any):
    what training's evaluation and ``tools/evaluate.py`` both do."""
    protocols, reason = choose_protocols(protocol, gt)
    extra = None
    if dets_per_category:
        extra = f"AP-fixed / AP-pool with {dets_per_category} detections per category"
    logger.info(describe(gt, protocols, reason, len(dets), extra))
    results, rows, row_keys = evaluate_detections(
        gt, dets, tasks, protocols, max_dets_per_image, dets_per_category
    )
    logger.info(f"Results on {gt.name}:\n" + frequency_group_table(results, rows))
    write_reports(output_dir, results, rows, row_keys, logger=logger)
    return OrderedDict(results), rows


def detection_cap_warning(cfg):
    """The warning (a string) when the model keeps fewer detections per image
    (TEST.DETECTIONS_PER_IMAGE) than the LVIS protocol scores (TEST.LVIS_MAX_DETS_PER_IMAGE),
    else None. The model's cap keeps the best scores over all classes, so it cuts the
    low-scoring ones first: often the rare classes of a sigmoid model."""
    model_cap, protocol_cap = cfg.TEST.DETECTIONS_PER_IMAGE, cfg.TEST.LVIS_MAX_DETS_PER_IMAGE
    if cfg.TEST.EVALUATOR == "coco" or model_cap >= protocol_cap:
        return None  # COCO's protocol scores 100 per image
    return (
        f"TEST.DETECTIONS_PER_IMAGE {model_cap} is below TEST.LVIS_MAX_DETS_PER_IMAGE "
        f"{protocol_cap}: the lowest-scoring detections of each image, often rare classes', "
        f"are cut before the LVIS evaluation (LVIS configs use {protocol_cap})"
    )


def build_longtail_evaluator(cfg, dataset_name, output_folder=None):
    """The evaluator of ``cfg`` (TEST.EVALUATOR, TEST.LVIS_MAX_DETS_PER_IMAGE,
    TEST.DETS_PER_CATEGORY, MODEL.MASK_ON) for one dataset; warns when the model's per-image
    cap is below the protocol's (:func:`detection_cap_warning`)."""
    warning = detection_cap_warning(cfg)
    if warning:
        logging.getLogger(__name__).warning(warning)
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    return LongTailLVISEvaluator(
        dataset_name,
        output_folder,
        tasks=("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",),
        max_dets_per_image=cfg.TEST.LVIS_MAX_DETS_PER_IMAGE,
        protocol=cfg.TEST.EVALUATOR,
        dets_per_category=cfg.TEST.DETS_PER_CATEGORY,
    )
