#!/usr/bin/env python
"""
detectron2's tools/visualize_data.py for longtail_d2 configs: the training data as the model
sees it (``--source dataloader``: after the config's sampler and augmentations) or as annotated
(``--source annotation``), drawn with detectron2's Visualizer, boxes coloured by frequency group.

    python tools/visualize_data.py --config-file configs/Tiny/mask_rcnn_R_18_FPN_demo.yaml \\
        --source dataloader --output-dir vis_data
    python tools/visualize_data.py --config-file x.yaml --source annotation -n 20

(Ground truth next to predictions, and images chosen by category or group: tools/visualize.py.)
"""
import argparse
import itertools
import os

import longtail_d2  # noqa: F401  (first: quiet start-up, detectron2 check, registrations)
from longtail_d2.engine import prepare_run, trainer_class


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--source", choices=["annotation", "dataloader"], default="dataloader")
    parser.add_argument("--output-dir", default="vis_data")
    parser.add_argument("-n", "--num-images", type=int, default=10)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser.parse_args(argv)


def _draw(image, metadata, frequency, boxes, classes, masks=None):
    """(H, W, 3) uint8 RGB image with the instances drawn in their groups' colours."""
    import matplotlib.colors as mplc
    from detectron2.utils.visualizer import Visualizer

    from longtail_d2.evaluation.reports import GROUP_COLORS

    vis = Visualizer(image, metadata, scale=max(1.0, 512 / max(image.shape[:2])))
    if len(classes):
        vis.overlay_instances(
            boxes=boxes,
            labels=[f"{metadata.thing_classes[c]} ({frequency[c]})" for c in classes],
            masks=masks,
            assigned_colors=[mplc.to_rgb(GROUP_COLORS[frequency[c]]) for c in classes],
            alpha=0.3,
        )
    return vis.get_output().get_image()


def dataloader_images(cfg, metadata, frequency, n):
    """Images of the training loader's batches, as the model gets them (augmented)."""
    from detectron2.data import detection_utils

    loader = trainer_class(cfg).build_train_loader(cfg)
    for batch in loader:
        for d in batch:
            image = detection_utils.convert_image_to_rgb(
                d["image"].permute(1, 2, 0).numpy(), cfg.INPUT.FORMAT
            )
            inst = d["instances"]
            masks = inst.gt_masks.polygons if inst.has("gt_masks") else None
            classes = inst.gt_classes.tolist()
            yield d, _draw(image, metadata, frequency, inst.gt_boxes.tensor.numpy(), classes, masks)
            n -= 1
            if n == 0:
                return


def annotation_images(dicts, metadata, frequency, n):
    import numpy as np
    from detectron2.data.detection_utils import read_image
    from detectron2.structures import BoxMode

    for d in itertools.islice(dicts, n):
        anns = d.get("annotations", [])
        boxes = np.array(
            [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
        ).reshape(-1, 4)
        with_masks = all("segmentation" in a for a in anns)
        masks = [a["segmentation"] for a in anns] if with_masks else None
        classes = [a["category_id"] for a in anns]
        image = read_image(d["file_name"], "RGB")
        yield d, _draw(image, metadata, frequency, boxes, classes, masks)


def main(argv=None):
    args = parse_args(argv)
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from PIL import Image

    from longtail_d2.evaluation.viewer import frequency_groups_of

    cfg = prepare_run(args.config_file, args.opts)
    dataset = cfg.DATASETS.TRAIN[0]
    metadata = MetadataCatalog.get(dataset)
    frequency = frequency_groups_of(dataset)
    os.makedirs(args.output_dir, exist_ok=True)
    if args.source == "dataloader":
        images = dataloader_images(cfg, metadata, frequency, args.num_images)
    else:
        dicts = DatasetCatalog.get(dataset)
        images = annotation_images(dicts, metadata, frequency, args.num_images)
    written = 0
    for i, (d, image) in enumerate(images):
        name = os.path.splitext(os.path.basename(d["file_name"]))[0]
        Image.fromarray(image).save(os.path.join(args.output_dir, f"{i:03d}_{name}.png"))
        written += 1
    print(f"wrote {written} images to {args.output_dir}")


if __name__ == "__main__":
    main()
