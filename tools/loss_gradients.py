#!/usr/bin/env python
"""
Where each classification loss sends its gradient, on a trained model's own training RoIs.

    python tools/loss_gradients.py --config-file RUN/config.yaml --weights RUN/model_final.pth \\
        --losses SigmoidCELoss EQLLoss DropLoss --batches 30 --output OUT [KEY VALUE ...]

The model of the config (MODEL.WEIGHTS replaced by --weights; "" = the model as initialised)
replays --batches training batches of the config's training loader through detectron2's standard
ROI heads (longtail_d2.engine.roi_features): the sampled RoIs' box features and labels, and the
classifier's logits on them. Every loss of --losses (built through LONGTAIL_LOSS_REGISTRY with the
training set's class statistics, as the predictor builds it) is differentiated with respect to
the SAME logits, in float64. Per frequency group of the classes (rare / common / frequent), summed
over the batches:
  positive          sum of |g| at (RoI r, its class);
  neg fg / neg bg   sum of |g| on the group's logits from foreground RoIs of other classes /
                    from background RoIs;
  removed fg / bg   the fraction of sigmoid BCE's negative mass on the same logits that the loss
                    removes, per source ("suppressed fraction"; < 0: the loss adds to it);
  neg/pos           (neg fg + neg bg) / positive;
and, per group, the RoI counts and the model's mean test score (sigma(z) for sigmoid models) of
the group's classes on background RoIs. DropLoss: the mean of its rho (last_ratio) over batches.
Stateful losses (EQL v2, Seesaw) keep their statistics frozen over the batches: the checkpoint's
when the run was trained with that loss, else fresh ones.

Writes OUT/loss_gradients.md and OUT/loss_gradients.json (strict JSON, null = no value).
Bad input (files, loss names, logit widths, ROI heads) is reported in one line, exit code 2,
before anything is written.
"""
import argparse
import copy
import json
import os
import re
import sys

# First: longtail_d2's warning filters quiet detectron2's start-up FutureWarnings.
import longtail_d2  # noqa: F401  # isort: skip
import torch
import yaml
from tabulate import tabulate

from longtail_d2.data import DatasetError, training_class_statistics
from longtail_d2.engine import ConfigError, prepare_run, trainer_class
from longtail_d2.engine.roi_features import check_roi_features_supported, roi_box_features
from longtail_d2.evaluation.loss_gradients import (
    GROUP_NAMES,
    GROUPS,
    background_score_sums,
    bce_logit_gradients,
    gradient_masses,
    group_index,
    group_report,
    logit_gradients,
    roi_counts,
)
from longtail_d2.modeling.losses import LONGTAIL_LOSS_REGISTRY, build_classification_loss

DEFAULT_LOSSES = ("SigmoidCELoss", "EQLLoss", "DropLoss")
CONFIG_KEY = re.compile(r"[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*")
USER_ERRORS = (ConfigError, DatasetError, ValueError, OSError, yaml.YAMLError)


class InputError(ValueError):
    """Bad input; the message names the file, option or key."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--weights", required=True, help='checkpoint (.pth); "" = the model as initialised'
    )
    parser.add_argument("--losses", nargs="+", default=list(DEFAULT_LOSSES), metavar="LOSS")
    parser.add_argument("--batches", type=int, default=20, help="training batches (default 20)")
    parser.add_argument("--output", metavar="DIR", help="write loss_gradients.{md,json} here")
    parser.add_argument("--seed", type=int, default=0, help="RoI sampling and DropLoss draws")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE pairs")
    args = parser.parse_args(argv)
    # KEY VALUE pairs may follow --losses: its first all-capitals word (a config key such as
    # MODEL.DEVICE; loss names are CamelCase) starts them.
    keys = [i for i, x in enumerate(args.losses) if CONFIG_KEY.fullmatch(x)]
    if keys:
        args.opts = args.losses[keys[0]:] + list(args.opts)
        args.losses = args.losses[: keys[0]]
    return args


def check_args(args):
    """The checks that need no model: files, loss names, batch count."""
    if not os.path.isfile(args.config_file):
        raise InputError(f"--config-file {args.config_file}: no such file")
    if args.weights and not os.path.isfile(args.weights):
        raise InputError(f"--weights {args.weights}: no such file")
    if args.batches < 1:
        raise InputError(f"--batches {args.batches}: must be at least 1")
    known = sorted(name for name, _ in LONGTAIL_LOSS_REGISTRY)
    if not args.losses:
        raise InputError(f"--losses: no loss named; choices: {', '.join(known)}")
    for name in args.losses:
        if name not in known:
            raise InputError(f"--losses: unknown loss {name!r}; choices: {', '.join(known)}")


def build_losses(cfg, stats, names, num_logits):
    """{name: fresh loss module}, each built as the predictor builds MODEL.ROI_BOX_HEAD.CLS_LOSS;
    raises InputError for a loss whose logit width is not the model's."""
    losses, wrong = {}, []
    for name in names:
        c = cfg.clone()
        c.defrost()
        c.MODEL.ROI_BOX_HEAD.CLS_LOSS = name
        losses[name] = build_classification_loss(c, stats)
        if losses[name].num_logits != num_logits:
            wrong.append(f"{name} ({losses[name].num_logits})")
    if wrong:
        raise InputError(
            f"--losses: {', '.join(wrong)} take another number of logits per RoI than the model "
            f"of MODEL.ROI_BOX_HEAD.CLS_LOSS {cfg.MODEL.ROI_BOX_HEAD.CLS_LOSS} ({num_logits}); "
            "their gradients are not on the same logits"
        )
    return losses


def loss_states(losses, predictor, cfg, weights):
    """Stateful losses: the predictor's own module (its loaded statistics) when the run was
    trained with that loss. Returns {name: description of the state used}."""
    states = {}
    for name, loss in losses.items():
        if not loss.has_running_statistics:
            states[name] = "stateless"
        elif name == cfg.MODEL.ROI_BOX_HEAD.CLS_LOSS:
            losses[name] = copy.deepcopy(predictor.cls_loss)
            states[name] = "checkpoint" if weights else "as initialised"
            states[name] += " statistics, frozen"
        else:
            states[name] = "fresh statistics (not the run's loss), frozen"
    return states


def load_model(cfg, weights):
    from longtail_d2.engine.checkpoint import LongTailCheckpointer

    model = trainer_class(cfg).build_model(cfg)
    if weights:
        LongTailCheckpointer(model).load(weights)
    model.train()  # RoI sampling needs the training path (BN as in training: batch statistics)
    return model


def measure(cfg, model, losses, stats, num_batches):
    """Sums over the batches: per loss (3, G) masses, BCE's, RoI counts, background scores."""
    predictor = model.roi_heads.box_predictor
    groups = group_index(stats.frequency)
    num_classes = len(groups)
    sums = {name: 0 for name in losses}
    bce = counts = bg_scores = 0
    rhos = {name: [] for name in losses}
    data = iter(trainer_class(cfg).build_train_loader(cfg))
    for b in range(num_batches):
        batch = next(data)
        with torch.no_grad():
            features, gt = roi_box_features(model, batch)
            logits = predictor.classifier(features.flatten(1)).double()
            scores = predictor.cls_loss.scores(logits)
        gt = gt.to(logits.device)
        bce = bce + gradient_masses(bce_logit_gradients(logits, gt, num_classes), gt, groups)
        counts = counts + roi_counts(gt, groups)
        bg_scores = bg_scores + background_score_sums(scores, gt, groups)
        for name, loss in losses.items():
            with loss.frozen_statistics():
                grad = logit_gradients(loss, logits, gt)
            sums[name] = sums[name] + gradient_masses(grad, gt, groups)
            if hasattr(loss, "last_ratio"):  # DropLoss's rho of this batch
                rhos[name].append(loss.last_ratio)
        print(
            f"batch {b + 1}/{num_batches}: {len(gt)} RoIs, {int((gt < num_classes).sum())} fg",
            file=sys.stderr,
            flush=True,
        )
    return sums, bce, counts, bg_scores, rhos


def build_result(args, cfg, stats, losses, states, measured):
    sums, bce, counts, bg_scores, rhos = measured
    groups = group_index(stats.frequency)
    classes = torch.bincount(groups, minlength=len(GROUPS)).tolist()
    num_bg = int(counts[-1])
    result = {
        "config": args.config_file,
        "weights": args.weights,
        "batches": args.batches,
        "seed": args.seed,
        "model_loss": cfg.MODEL.ROI_BOX_HEAD.CLS_LOSS,
        "groups": {
            g: {
                "name": GROUP_NAMES[g],
                "classes": classes[i],
                "fg_rois": int(counts[i]),
                # mean over (background RoI, class of the group) pairs
                "mean_bg_score": (
                    float(bg_scores[i]) / (num_bg * classes[i]) if num_bg and classes[i] else None
                ),
            }
            for i, g in enumerate(GROUPS)
        },
        "bg_rois": num_bg,
        "losses": {},
    }
    for name in losses:
        entry = {"state": states[name], "groups": group_report(sums[name], bce)}
        if rhos[name]:
            entry["mean_rho"] = sum(rhos[name]) / len(rhos[name])
        result["losses"][name] = entry
    return result


def _fmt(v, digits=4):
    if v is None:
        return "-"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def markdown(result):
    rows = []
    for name, entry in result["losses"].items():
        for g in GROUPS:
            r = entry["groups"][g]
            rows.append(
                [name, GROUP_NAMES[g]]
                + [_fmt(r[k]) for k in ("positive", "neg_fg", "neg_bg")]
                + [_fmt(r[k], 3) for k in ("removed_fg", "removed_bg", "neg_over_pos")]
            )
    grads = tabulate(
        rows,
        headers=[
            "loss", "group", "positive", "neg fg", "neg bg", "removed fg", "removed bg", "neg/pos"
        ],
        tablefmt="pipe",
    )
    group_rows = [
        [GROUP_NAMES[g], v["classes"], v["fg_rois"], _fmt(v["mean_bg_score"])]
        for g, v in result["groups"].items()
    ]
    groups = tabulate(
        group_rows,
        headers=["group", "classes", "fg RoIs", "mean score on bg RoIs"],
        tablefmt="pipe",
    )
    notes = [
        f"{name}: {e['state']}" + (f"; mean rho {e['mean_rho']:.3g}" if "mean_rho" in e else "")
        for name, e in result["losses"].items()
    ]
    return (
        f"Gradient mass |d loss / d logit| summed over {result['batches']} training batches "
        f"({result['bg_rois']} background RoIs), model loss {result['model_loss']}, "
        f"weights {result['weights'] or '(as initialised)'}:\n\n{grads}\n\n{groups}\n\n"
        + "\n".join(f"- {n}" for n in notes)
        + "\n"
    )


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    from detectron2.utils.env import seed_all_rng
    from detectron2.utils.events import EventStorage

    cfg = prepare_run(args.config_file, list(args.opts) + ["MODEL.WEIGHTS", args.weights])
    stats = training_class_statistics(cfg)
    if stats.is_placeholder:
        raise InputError(
            f"DATASETS.TRAIN {tuple(cfg.DATASETS.TRAIN)}: no annotations readable, so no "
            "frequency groups"
        )
    num_logits = build_classification_loss(cfg, stats).num_logits
    losses = build_losses(cfg, stats, args.losses, num_logits)
    seed_all_rng(args.seed)
    model = load_model(cfg, args.weights)
    check_roi_features_supported(model.roi_heads)
    predictor = model.roi_heads.box_predictor
    if not hasattr(predictor, "cls_loss"):
        raise InputError(
            f"MODEL.ROI_HEADS.NAME {cfg.MODEL.ROI_HEADS.NAME}: its box predictor "
            f"({type(predictor).__name__}) is not longtail_d2's (no cls_loss)"
        )
    states = loss_states(losses, predictor, cfg, args.weights)
    for loss in losses.values():
        loss.to(model.device)
    with EventStorage(0):  # the RPN's and the label sampler's logging needs one
        measured = measure(cfg, model, losses, stats, args.batches)
    result = build_result(args, cfg, stats, losses, states, measured)
    text = markdown(result)
    print(text)
    if args.output:
        os.makedirs(args.output, exist_ok=True)
        with open(os.path.join(args.output, "loss_gradients.md"), "w") as f:
            f.write(text)
        with open(os.path.join(args.output, "loss_gradients.json"), "w") as f:
            json.dump(result, f, indent=1, allow_nan=False)
    return result


if __name__ == "__main__":
    try:
        main()
    except USER_ERRORS as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        sys.exit(2)
