"""Config keys of longtail_d2: call :func:`add_longtail_config` on ``get_cfg()`` before merging
YAML files or command-line overrides, so that misspelled keys stay errors."""

from detectron2.config import CfgNode as CN

__all__ = ["add_longtail_config"]


def add_dataset_config(cfg):
    # Datasets in LVIS or COCO json format registered before any loader is built, as a list of
    # (name, json_file, image_root) triples; relative paths are taken under $DETECTRON2_DATASETS
    # (default "datasets"), like detectron2's builtin ones. Their names go in DATASETS.TRAIN/TEST.
    cfg.DATASETS.CUSTOM = []
    cfg.DATASETS.SYNTHETIC = CN()
    # Folder (under $DETECTRON2_DATASETS when relative) of the generated long-tailed dataset;
    # "" = none. When set and absent it is generated before training (deterministic by SEED).
    cfg.DATASETS.SYNTHETIC.ROOT = ""
    # Seed of the generator: the same seed and sizes give byte-identical images and json.
    cfg.DATASETS.SYNTHETIC.SEED = 0
    # Number of categories (at most 42: 7 shapes x 6 colours), split into r / c / f groups.
    cfg.DATASETS.SYNTHETIC.NUM_CLASSES = 30
    # Training images before empty ones are dropped; the most frequent class is in ~40% of them.
    cfg.DATASETS.SYNTHETIC.NUM_TRAIN_IMAGES = 1500
    # Validation images; every class appears in at least MIN_VAL_IMAGES_PER_CLASS of them.
    cfg.DATASETS.SYNTHETIC.NUM_VAL_IMAGES = 150
    cfg.DATASETS.SYNTHETIC.MIN_VAL_IMAGES_PER_CLASS = 3
    # Side of the square images in pixels.
    cfg.DATASETS.SYNTHETIC.IMAGE_SIZE = 128


def add_evaluation_config(cfg):
    # Detections kept per image by the LVIS protocol (lvis-api's max_dets), best scores first.
    cfg.TEST.LVIS_MAX_DETS_PER_IMAGE = 300


def add_longtail_config(cfg):
    """Add every longtail_d2 key, with its default, to a detectron2 config (in place)."""
    add_dataset_config(cfg)
    add_evaluation_config(cfg)
    return cfg
