#!/usr/bin/env python
"""
Score a results file (LVIS / COCO result format, e.g. a run's
``OUTPUT_DIR/inference/<dataset>/instances_results.json``) without a model, against a dataset
registered by a config or detectron2's builtin LVIS names, or against an annotation file. It
logs the same tables and writes the same files as training's evaluation.

    python tools/evaluate.py output/demo/inference/longtail_synth_val/instances_results.json \
        --dataset longtail_synth_val --config-file configs/Tiny/mask_rcnn_R_18_FPN_demo.yaml
    python tools/evaluate.py results.json --gt datasets/lvis/lvis_v1_val.json --protocol lvis
    python tools/evaluate.py results.json --gt val.json --protocol both --dets-per-category 10000
    python tools/evaluate.py results.json --gt val.json --bootstrap 100   # + evaluation noise
    python tools/evaluate.py results.json --gt val.json --group-recall    # + found per group

Protocol, per-image cap and AP-fixed budget default to the config's TEST.EVALUATOR,
TEST.LVIS_MAX_DETS_PER_IMAGE and TEST.DETS_PER_CATEGORY. ``--bootstrap N`` adds, per task,
the std of the LVIS metrics over N resamples of the evaluation images
(:mod:`longtail_d2.evaluation.bootstrap`), logged as a table and written to ``bootstrap.json``
beside the other reports. ``--group-recall`` adds, per task and frequency group, the detections
kept under the per-image cap and the fraction of ground-truth instances that a detection of the
same category overlaps at IoU >= ``--recall-iou`` (:mod:`longtail_d2.evaluation.group_recall`),
and where each class's n best detections lie (n: its instances): on its own instances, on another
class's, on background; written to ``group_recall.json``. Bad input stops with one line
``error: ...`` before anything is written.
"""

import argparse
import logging
import os
import sys

from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from longtail_d2.data import DatasetError  # noqa: E402
from longtail_d2.engine.setup import ConfigError, load_config, prepare_run  # noqa: E402
from longtail_d2.evaluation.bootstrap import bootstrap_lvis_metrics  # noqa: E402
from longtail_d2.evaluation.detections import ResultsError, load_results_json  # noqa: E402
from longtail_d2.evaluation.group_recall import (  # noqa: E402
    recall_per_group,
    top_ranked_per_group,
)
from longtail_d2.evaluation.lvis_evaluator import evaluate_and_report  # noqa: E402
from longtail_d2.evaluation.protocols import EvalGroundTruth, choose_protocols  # noqa: E402
from longtail_d2.evaluation.reports import GROUP_NAMES, dump_json  # noqa: E402

BOOTSTRAP_FILE = "bootstrap.json"
GROUP_RECALL_FILE = "group_recall.json"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    add = parser.add_argument
    add("results", help="results file (a JSON list of detections)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="a dataset registered by --config-file, or builtin")
    source.add_argument("--gt", help="an LVIS- or COCO-format annotation file")
    add("--config-file", default="", help="config whose datasets and TEST keys to use")
    add("--tasks", nargs="+", choices=("bbox", "segm"), help="default: bbox, + segm with masks")
    add("--protocol", choices=("lvis", "coco", "both", "auto"), help="default: TEST.EVALUATOR")
    add("--max-dets-per-image", type=int, help="default: TEST.LVIS_MAX_DETS_PER_IMAGE")
    add("--dets-per-category", type=int, help="AP-fixed / pool K; default: TEST.DETS_PER_CATEGORY")
    add("--output", help="folder of the reports (default: <results folder>/evaluate)")
    add("--bootstrap", type=int, metavar="N", help="std of the LVIS metrics over N >= 2 resamples")
    add("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap's image draws")
    add("--group-recall", action="store_true", help="detections and instances found per group")
    add("--recall-iou", type=float, default=0.5, help="--group-recall's overlap (default 0.5)")
    add("opts", nargs="*", help="config overrides KEY VALUE ...")
    return parser.parse_intermixed_args(argv)


def _defaults():
    """The TEST keys' defaults, without the model checks of a run's config."""
    from detectron2.config import get_cfg

    from longtail_d2.config import add_longtail_config

    return add_longtail_config(get_cfg())


def _ground_truth(args):
    """(config, ground truth) of the command line."""
    use_defaults = not (args.config_file or args.opts)  # e.g. a builtin LVIS name
    if args.gt:
        cfg = _defaults() if use_defaults else load_config(args.config_file, args.opts)
        return cfg, EvalGroundTruth.from_json(args.gt)
    from detectron2.data import DatasetCatalog

    cfg = _defaults() if use_defaults else prepare_run(args.config_file, args.opts)
    if args.dataset not in DatasetCatalog.list():
        raise DatasetError(f"dataset {args.dataset!r} is not registered (pass its --config-file)")
    return cfg, EvalGroundTruth.from_dataset(args.dataset)


def _check_bootstrap_protocol(protocol, gt):
    """--bootstrap resamples the LVIS protocol's numbers (reported under the task's key, i.e.
    the first protocol): a one-line error where that is COCO's."""
    protocols, reason = choose_protocols(protocol, gt)
    if protocols[0] != "lvis":
        raise ValueError(
            f"--bootstrap resamples the LVIS protocol only, and {gt.name} is scored with the "
            f"{protocols[0]} protocol ({reason}); pass --protocol lvis or both"
        )


def bootstrap_table(boot: dict) -> str:
    """metric | full-data value | std over the resamples | resamples where it is nan."""
    n = boot["num_samples"]
    rows = [[key, m["value"], m["std"], m["num_nan"]] for key, m in boot["metrics"].items()]
    headers = ["metric", "value", f"bootstrap std ({n} resamples)", "nan resamples"]
    return tabulate(rows, headers=headers, floatfmt=".2f", tablefmt="pipe")


def run_bootstrap(gt, dets, tasks, args, output, max_dets, logger):
    """Per task, the image bootstrap of the LVIS metrics: logged, written to bootstrap.json."""
    out = {}
    for task in tasks:
        out[task] = bootstrap_lvis_metrics(
            gt.lvis_gt, dets, task, args.bootstrap, args.bootstrap_seed, max_dets
        )
        logger.info(
            f"Evaluation noise of {task} on {gt.name} (image bootstrap, seed "
            f"{args.bootstrap_seed}):\n" + bootstrap_table(out[task])
        )
    dump_json(out, os.path.join(output, BOOTSTRAP_FILE))
    return out


def group_recall_table(report: dict, iou_thr: float) -> str:
    """group | instances | found | recall | detections kept | median score of the found."""
    rows = []
    for g, name in GROUP_NAMES.items():
        r = report[g]
        rows.append([name, r["instances"], r["found"], 100 * r["recall"], r["detections"],
                     r["median_score"]])
    headers = ["group", "instances", "found", f"recall@{iou_thr:g} %", "detections",
               "median score found"]
    return tabulate(rows, headers=headers, floatfmt=(".1f",) * 4 + (".0f", ".3g"), tablefmt="pipe")


def top_ranked_table(report: dict, iou_thr: float) -> str:
    """group | instances | ranked | % on own class | % on another class (by its group) | % on
    background."""
    rows = []
    for g, name in GROUP_NAMES.items():
        r = report[g]["top_ranked"]
        pct = (lambda n: 100 * n / r["ranked"]) if r["ranked"] else (lambda n: float("nan"))
        by_group = " / ".join(f"{pct(r['other_by_group'][h]):.1f}" for h in GROUP_NAMES)
        rows.append([name, r["instances"], r["ranked"], pct(r["own"]), pct(r["other"]), by_group,
                     pct(r["background"])])
    headers = ["group", "instances", "top-n detections", f"own class @{iou_thr:g} %",
               "other class %", "on r / c / f %", "background %"]
    return tabulate(rows, headers=headers, floatfmt=".1f", tablefmt="pipe")


def run_group_recall(gt, dets, tasks, args, output, max_dets, logger):
    """Per task, :func:`recall_per_group` and :func:`top_ranked_per_group` (under each group's
    "top_ranked"): logged, written to group_recall.json."""
    out = {}
    for task in tasks:
        out[task] = recall_per_group(gt.lvis_gt, dets, task, args.recall_iou, max_dets)
        top = top_ranked_per_group(gt.lvis_gt, dets, task, args.recall_iou, max_dets)
        for g, counts in top.items():
            out[task][g]["top_ranked"] = counts
        logger.info(
            f"Instances found per group, {task} on {gt.name} ({max_dets} detections per image):\n"
            + group_recall_table(out[task], args.recall_iou)
        )
        logger.info(
            f"Where each class's top-n detections lie (n: its instances), {task} on {gt.name}:\n"
            + top_ranked_table(out[task], args.recall_iou)
        )
    dump_json(out, os.path.join(output, GROUP_RECALL_FILE))
    return out


def main(argv=None):
    args = parse_args(argv)
    if args.bootstrap is not None and args.bootstrap < 2:
        sys.exit(f"error: --bootstrap {args.bootstrap}: needs N >= 2 resamples (a std)")
    if not 0 < args.recall_iou <= 1:
        sys.exit(f"error: --recall-iou {args.recall_iou}: an IoU in (0, 1]")
    from detectron2.utils.logger import setup_logger

    logger = setup_logger(name="longtail_d2", abbrev_name="lt")
    try:
        cfg, gt = _ground_truth(args)
        dets = load_results_json(args.results)
        tasks = tuple(args.tasks or (("bbox", "segm") if dets.has_masks else ("bbox",)))
        if "segm" in tasks and len(dets) and not dets.has_masks:
            raise ResultsError(f"{args.results}: --tasks segm needs masks in every detection")
        protocol = cfg.TEST.EVALUATOR if args.protocol is None else args.protocol
        folder = os.path.dirname(os.path.abspath(args.results))
        output = args.output or os.path.join(folder, "evaluate")
        per_category = args.dets_per_category
        max_dets = args.max_dets_per_image or cfg.TEST.LVIS_MAX_DETS_PER_IMAGE
        if args.bootstrap:
            _check_bootstrap_protocol("" if protocol == "auto" else protocol, gt)
        results, _ = evaluate_and_report(
            gt,
            dets,
            tasks,
            "" if protocol == "auto" else protocol,
            output,
            logging.getLogger("longtail_d2.evaluate"),
            max_dets_per_image=max_dets,
            dets_per_category=cfg.TEST.DETS_PER_CATEGORY if per_category is None else per_category,
        )
        if args.bootstrap:
            run_bootstrap(gt, dets, tasks, args, output, max_dets, logger)
        if args.group_recall:
            run_group_recall(gt, dets, tasks, args, output, max_dets, logger)
    except (ResultsError, DatasetError, ConfigError, ValueError, OSError) as e:
        sys.exit("error: " + " ".join(str(e).split()))
    logger.info(f"reports written to {output}")
    return results


if __name__ == "__main__":
    main()
