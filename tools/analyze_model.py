#!/usr/bin/env python
"""
detectron2's tools/analyze_model.py for longtail_d2 configs: FLOPs, activations and
parameters of the model of a config (its keys and datasets understood), with detectron2's
counting functions (detectron2.utils.analysis, fvcore's parameter_count_table).

    python tools/analyze_model.py --config-file configs/Tiny/mask_rcnn_R_18_FPN_demo.yaml \\
        --tasks parameter flop
    python tools/analyze_model.py --config-file x.yaml --tasks flop activation -n 10 \\
        MODEL.WEIGHTS w.pth
    python tools/analyze_model.py --config-file x.yaml --tasks structure

FLOPs and activations depend on the image (size, number of detections): they are averaged
over the first -n images of DATASETS.TEST[0], in inference mode.
"""
import argparse
import itertools
from collections import Counter

import longtail_d2  # noqa: F401  (first: quiet start-up, detectron2 check, registrations)
from longtail_d2.engine import prepare_run, trainer_class


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--tasks", nargs="+", default=["parameter"],
        choices=["flop", "activation", "parameter", "structure"],
    )
    parser.add_argument(
        "-n", "--num-inputs", type=int, default=10, help="images for flop / activation"
    )
    parser.add_argument("--max-depth", type=int, default=5, help="of the parameter table")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser.parse_args(argv)


def count_per_operator(count_fn, model, cfg, num_inputs):
    """Average count (in units of 1e9 for flops, 1e6 for activations) per operator type."""
    from detectron2.data import build_detection_test_loader

    loader = build_detection_test_loader(cfg, cfg.DATASETS.TEST[0])
    totals, n = Counter(), 0
    for inputs in itertools.islice(loader, num_inputs):
        totals.update(count_fn(model, inputs))
        n += 1
    return {k: v / n for k, v in totals.most_common()}, n


def main(argv=None):
    args = parse_args(argv)
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.utils.analysis import activation_count_operators, flop_count_operators
    from fvcore.nn import parameter_count_table
    from tabulate import tabulate

    cfg = prepare_run(args.config_file, args.opts)
    model = trainer_class(cfg).build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model.eval()
    for task in args.tasks:
        if task == "parameter":
            print(parameter_count_table(model, max_depth=args.max_depth))
        elif task == "structure":
            print(model)
        else:
            count_fn, unit = {
                "flop": (flop_count_operators, "GFLOPs"),
                "activation": (activation_count_operators, "M activations"),
            }[task]
            per_op, n = count_per_operator(count_fn, model, cfg, args.num_inputs)
            table = [[op, value] for op, value in per_op.items()]
            table.append(["total", sum(per_op.values())])
            print(f"{unit} per image, average of {n} images of {cfg.DATASETS.TEST[0]}:")
            print(tabulate(table, headers=["operator", unit], floatfmt=".4f", tablefmt="pipe"))


if __name__ == "__main__":
    main()
