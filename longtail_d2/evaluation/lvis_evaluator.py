"""Detectron2 evaluator for the LVIS protocol on any dataset registered by longtail_d2 or
detectron2's builtin LVIS splits. Writes ``metrics.json`` (``bbox/AP`` ... ``segm/APf``),
``per_category_ap.json`` and a plot of AP per category into its output folder."""

import copy
import itertools
import logging
from collections import OrderedDict

import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils import comm

from ..data import lvis_ground_truth
from .lvis_eval import evaluate_lvis
from .reports import frequency_group_table, write_reports

__all__ = ["LongTailLVISEvaluator"]


class LongTailLVISEvaluator(DatasetEvaluator):
    def __init__(
        self,
        dataset_name,
        output_dir=None,
        *,
        tasks=("bbox", "segm"),
        max_dets_per_image=300,
        distributed=True,
    ):
        """
        Args:
            dataset_name: a registered dataset whose metadata has ``json_file`` (LVIS format,
                or any format longtail_d2 registered).
            output_dir: where metrics.json, per_category_ap.json and the plot go; None = nowhere.
            tasks: "bbox" and / or "segm".
            max_dets_per_image: detections per image kept by the protocol (LVIS: 300).
        """
        self._tasks = tuple(tasks)
        self._dataset_name = dataset_name
        self._metadata = MetadataCatalog.get(dataset_name)
        self._output_dir = output_dir
        self._max_dets = max_dets_per_image
        self._distributed = distributed
        self._logger = logging.getLogger(__name__)

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            instances = out["instances"].to(torch.device("cpu"))
            self._predictions.extend(instances_to_coco_json(instances, inp["image_id"]))

    def _to_dataset_ids(self, results):
        id_map = self._metadata.get("thing_dataset_id_to_contiguous_id")
        reverse = {v: k for k, v in id_map.items()} if id_map else None
        for r in results:
            c = r["category_id"]
            r["category_id"] = reverse[c] if reverse else c + 1  # builtin LVIS: ids are 1-based
        return results

    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions
        results = self._to_dataset_ids(copy.deepcopy(predictions))
        lvis_gt = lvis_ground_truth(self._dataset_name)
        tasks = self._tasks

        out = OrderedDict()
        per_category = {}
        for task in tasks:
            out[task], per_category[task] = evaluate_lvis(lvis_gt, results, task, self._max_dets)
        categories = sorted(lvis_gt["categories"], key=lambda c: c["id"])
        rows = [
            {
                "id": c["id"],
                "name": c.get("name", str(c["id"])),
                "frequency": c["frequency"],
                "image_count": c.get("image_count"),
                **{f"{t}/AP": per_category[t][c["id"]] for t in tasks},
            }
            for c in categories
        ]
        self._logger.info(
            f"LVIS evaluation of {self._dataset_name} ({len(results)} detections):\n"
            + frequency_group_table(out, rows)
        )
        if self._output_dir and comm.is_main_process():
            self._write(out, rows, tasks)
        return out

    def _write(self, out, rows, tasks):
        # Strict-JSON metrics, per-category JSON / CSV, classwise table, plots, history.jsonl and,
        # during training, TensorBoard (see reports.write_reports).
        write_reports(self._output_dir, out, rows, tasks, logger=self._logger)
