#!/usr/bin/env python
"""
Ground truth (left) and predictions (right) of chosen images, drawn with detectron2's
Visualizer, boxes and masks coloured by frequency group (rare red, common orange, frequent
blue); or a summary plot of a dataset.

    # predictions from a results file (LVIS / COCO result format, e.g. an evaluation's
    # inference/<dataset>/instances_results.json), the rare classes' worst 12 images
    python tools/visualize.py --config-file configs/Tiny/mask_rcnn_R_18_FPN_demo.yaml \\
        --results output/demo/inference/longtail_synth_val/instances_results.json --group r
    # predictions of a model, chosen images / categories (names or dataset ids)
    python tools/visualize.py --config-file x.yaml --image-ids 3 17 \\
        MODEL.WEIGHTS output/demo/model_final.pth
    python tools/visualize.py --config-file x.yaml --categories red_cross 7 --results r.json
    # class histogram by group and instances per image of the training set
    python tools/visualize.py --config-file x.yaml --summary --dataset longtail_synth_train

Without --results and MODEL.WEIGHTS only the ground truth is drawn. The PNGs go to --output;
with --group the ranking is also printed and written to ranking.csv. (With a model, --group
predicts every image holding the group's classes: on a large set, rank a results file instead.)
"""
import argparse
import csv
import os
import sys

import longtail_d2  # noqa: F401  (first: quiet start-up, detectron2 check, registrations)
from longtail_d2.data import DatasetError
from longtail_d2.engine import ConfigError, prepare_run
from longtail_d2.evaluation import viewer


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--dataset", help="a registered dataset (default: DATASETS.TEST[0])")
    parser.add_argument("--output", default="visualize", help="folder of the PNGs")
    parser.add_argument("--results", metavar="JSON", help="detections in LVIS / COCO result format")
    parser.add_argument("--image-ids", nargs="+", default=[], metavar="ID")
    parser.add_argument("--categories", nargs="+", default=[], metavar="NAME_OR_ID",
                        help="images with these categories; only these are drawn")
    parser.add_argument("--group", choices=["r", "c", "f"],
                        help="images with the group's categories, worst detected first")
    parser.add_argument("--max-images", type=int, default=12)
    parser.add_argument("--score-threshold", type=float, default=0.3,
                        help="predictions drawn from this score")
    parser.add_argument("--summary", action="store_true",
                        help="write <output>/<dataset>_summary.png and stop")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser.parse_args(argv)


def choose_images(args, dicts, frequency, categories, predictions):
    """The dataset dicts to draw, and the ranking rows when --group is given."""
    if args.image_ids:
        by_id = {str(d["image_id"]): d for d in dicts}
        missing = [i for i in args.image_ids if i not in by_id]
        if missing:
            raise viewer.ViewerError(f"--image-ids: {', '.join(missing)} not in the dataset")
        return [by_id[i] for i in args.image_ids], None
    if categories is not None:
        dicts = [d for d in dicts if any(a["category_id"] in categories for a in d["annotations"])]
    if args.group:
        ranking = viewer.rank_images_for_group(dicts, frequency, args.group, predictions)
        by_id = {d["image_id"]: d for d in dicts}
        return [by_id[r[0]] for r in ranking[: args.max_images]], ranking
    return dicts[: args.max_images], None


def main(argv=None):
    args = parse_args(argv)
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from PIL import Image

    cfg = prepare_run(args.config_file, args.opts)
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    if dataset not in DatasetCatalog.list():
        raise viewer.ViewerError(f"--dataset: {dataset!r} is not registered")
    os.makedirs(args.output, exist_ok=True)
    if args.summary:
        from longtail_d2.evaluation.plots import save

        path = os.path.join(args.output, f"{dataset}_summary.png")
        save(viewer.dataset_summary_figure(dataset), path)
        print(f"wrote {path}")
        return
    metadata = MetadataCatalog.get(dataset)
    frequency = viewer.frequency_groups_of(dataset)
    dicts = DatasetCatalog.get(dataset)
    categories = viewer.select_categories(dataset, args.categories) if args.categories else None
    predictions = viewer.load_results(args.results, dataset) if args.results else None
    chosen, ranking = choose_images(args, dicts, frequency, categories, predictions)
    if predictions is None and cfg.MODEL.WEIGHTS:
        # The model predicts the chosen images; with --group every image of the ranking.
        by_id = {d["image_id"]: d for d in dicts}
        pool = [by_id[r[0]] for r in ranking] if ranking is not None else chosen
        predictions = viewer.predict(cfg, pool)
        if ranking is not None:  # ranked again with the predictions
            chosen, ranking = choose_images(args, dicts, frequency, categories, predictions)
    if ranking is not None:
        with open(os.path.join(args.output, "ranking.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image_id", "badness" if predictions else "instances", "instances"])
            writer.writerows(ranking)
        for image_id, value, n in ranking[: args.max_images]:
            print(f"image {image_id}: {value:.3f} ({n} {args.group} instances)")
    for d in chosen:
        image = viewer.draw_image(
            d, metadata, frequency, predictions, categories, args.score_threshold
        )
        name = f"{d['image_id']}_{os.path.splitext(os.path.basename(d['file_name']))[0]}.png"
        Image.fromarray(image).save(os.path.join(args.output, name))
    print(f"wrote {len(chosen)} images to {args.output}")


if __name__ == "__main__":
    try:
        main()
    except (viewer.ViewerError, ConfigError, DatasetError, OSError) as e:
        sys.exit("error: " + " ".join(str(e).split()))
