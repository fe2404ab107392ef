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

Protocol, per-image cap and AP-fixed budget default to the config's TEST.EVALUATOR,
TEST.LVIS_MAX_DETS_PER_IMAGE and TEST.DETS_PER_CATEGORY. Bad input stops with one line
``error: ...`` before anything is written.
"""

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from longtail_d2.data import DatasetError  # noqa: E402
from longtail_d2.engine.setup import ConfigError, load_config, prepare_run  # noqa: E402
from longtail_d2.evaluation.detections import ResultsError, load_results_json  # noqa: E402
from longtail_d2.evaluation.lvis_evaluator import evaluate_and_report  # noqa: E402
from longtail_d2.evaluation.protocols import EvalGroundTruth  # noqa: E402


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


def main(argv=None):
    args = parse_args(argv)
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
        results, _ = evaluate_and_report(
            gt,
            dets,
            tasks,
            "" if protocol == "auto" else protocol,
            output,
            logging.getLogger("longtail_d2.evaluate"),
            max_dets_per_image=args.max_dets_per_image or cfg.TEST.LVIS_MAX_DETS_PER_IMAGE,
            dets_per_category=cfg.TEST.DETS_PER_CATEGORY if per_category is None else per_category,
        )
    except (ResultsError, DatasetError, ConfigError, ValueError, OSError) as e:
        sys.exit("error: " + " ".join(str(e).split()))
    logger.info(f"reports written to {output}")
    return results


if __name__ == "__main__":
    main()
