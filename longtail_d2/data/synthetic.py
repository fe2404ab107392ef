"""A generated long-tailed instance-segmentation dataset in LVIS format (the embedded default).

Each class is a (shape, colour) pair drawn as a filled polygon on a noisy grey background, so
classes are visually distinguishable and masks are exact polygons. Training image counts fall
geometrically with the class rank, from ~40% of the images (``head_image_fraction``) down to
2, which gives LVIS-like rare (1-10 images), common (11-100) and frequent (>100) groups at the
default size. The validation set (and the optional held-out test set, drawn the same way after
it) covers every class, and all splits carry ``neg_category_ids`` and some
``not_exhaustive_category_ids`` (an annotation of that class is then left out of the file).

Layout under ``root``: ``train/*.jpg``, ``val/*.jpg``, ``lvis_train.json``, ``lvis_val.json``,
with ``num_test_images > 0`` also ``test/*.jpg`` and ``lvis_test.json``, and ``generator.json``
(the parameters, checked when the folder is reused).
"""

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

from .class_statistics import frequency_groups

__all__ = ["SyntheticConfig", "generate_longtail_dataset", "ensure_synthetic_dataset"]

logger = logging.getLogger(__name__)

SHAPES = ("circle", "square", "triangle", "diamond", "hexagon", "star", "cross")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (230, 210, 40),
    "magenta": (200, 50, 200),
    "cyan": (40, 200, 210),
}
# Colours of classes 42-69, so that the first 42 keep their names (and renderings) whatever
# NUM_CLASSES is. Far from the grey background (80-170) and, with the +-20 jitter, from each other.
EXTRA_COLORS = {
    "orange": (240, 140, 30),
    "purple": (110, 40, 160),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
}
PALETTE = {**COLORS, **EXTRA_COLORS}
MAX_CLASSES = len(SHAPES) * len(PALETTE)
# Bumped whenever the same parameters would render a different dataset.
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int = 0
    num_classes: int = 30
    num_train_images: int = 1500
    num_val_images: int = 150
    min_val_images_per_class: int = 3
    image_size: int = 128
    max_objects: int = 5
    # Held-out test split, rendered after the others so that train and val do not change.
    num_test_images: int = 0
    # Fraction of the training images that hold the most frequent class.
    head_image_fraction: float = 0.4

    @classmethod
    def from_cfg(cls, cfg):
        s = cfg.DATASETS.SYNTHETIC
        return cls(
            seed=s.SEED,
            num_classes=s.NUM_CLASSES,
            num_train_images=s.NUM_TRAIN_IMAGES,
            num_val_images=s.NUM_VAL_IMAGES,
            min_val_images_per_class=s.MIN_VAL_IMAGES_PER_CLASS,
            image_size=s.IMAGE_SIZE,
            num_test_images=s.NUM_TEST_IMAGES,
            head_image_fraction=s.HEAD_IMAGE_FRACTION,
        )


def class_names(num_classes):
    """Class k = 7a + b (k < 42) is shape b in colour (a + b) % 6 of ``COLORS``; class
    42 + 7a + b is shape b in colour (a + b) % 4 of ``EXTRA_COLORS``: all 70 pairs are distinct."""
    first = len(SHAPES) * len(COLORS)
    names = []
    for k in range(num_classes):
        palette = list(COLORS) if k < first else list(EXTRA_COLORS)
        a, b = divmod(k if k < first else k - first, len(SHAPES))
        names.append(f"{palette[(a + b) % len(palette)]}_{SHAPES[b]}")
    return names


def _polygon(shape, cx, cy, r, theta):
    """(N, 2) float vertices of a shape of circumradius r, rotated by theta."""

    def ring(n, radii, offset=0.0):
        a = offset + theta + np.arange(n) * 2 * np.pi / n
        return np.stack([cx + radii * np.cos(a), cy + radii * np.sin(a)], axis=1)

    if shape == "circle":
        return ring(24, r)
    if shape == "square":
        return ring(4, r, np.pi / 4)
    if shape == "triangle":
        return ring(3, r, -np.pi / 2)
    if shape == "hexagon":
        return ring(6, r)
    if shape == "star":
        return ring(10, np.tile([r, 0.45 * r], 5), -np.pi / 2)
    if shape == "diamond":  # a rhombus, narrower than tall: unlike a rotated square
        pts = ring(4, r, -np.pi / 2)
        pts[:, 0] = cx + 0.55 * (pts[:, 0] - cx)
        return pts
    if shape == "cross":
        w = 0.33 * r
        xy = [(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r)]
        xy += [(-x, -y) for x, y in xy]
        c, s = np.cos(theta), np.sin(theta)
        return np.array([(cx + c * x - s * y, cy + s * x + c * y) for x, y in xy])
    raise ValueError(shape)


def _polygon_area(p):
    x, y = p[:, 0], p[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _render(rng, size, instances, path):
    """Draws the instances (list of (class, (cx, cy, r))) and returns their annotations."""
    gray = rng.integers(80, 170)
    pixels = gray + rng.normal(0, 10, (size, size, 3))
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    names = class_names(MAX_CLASSES)
    anns = []
    for cls, (cx, cy, r) in instances:
        color_name, shape = names[cls].split("_")
        poly = _polygon(shape, cx, cy, r, rng.uniform(-0.25, 0.25))
        poly = np.clip(poly, 0, size - 1)
        color = tuple(int(np.clip(v + rng.integers(-20, 21), 0, 255)) for v in PALETTE[color_name])
        draw.polygon([tuple(p) for p in poly], fill=color)
        x0, y0 = poly.min(0)
        x1, y1 = poly.max(0)
        anns.append(
            {
                "category_id": cls + 1,
                "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                "area": round(_polygon_area(poly), 2),
                "segmentation": [[round(float(v), 2) for v in poly.reshape(-1)]],
            }
        )
    img.save(path, quality=92)
    return anns


def _place(rng, size, placed, tries=30):
    """A circle (cx, cy, r) inside the image and apart from ``placed``, or None."""
    for _ in range(tries):
        r = rng.uniform(0.08, 0.19) * size
        cx, cy = rng.uniform(r + 1, size - r - 1, 2)
        if all((cx - x) ** 2 + (cy - y) ** 2 > (r + q + 2) ** 2 for x, y, q in placed):
            return float(cx), float(cy), float(r)
    return None


def _write_split(rng, cfg, root, split, classes_per_image, num_classes):
    """Renders one split; returns its LVIS-format dict (categories added by the caller)."""
    os.makedirs(os.path.join(root, split))
    images, annotations = [], []
    for i, classes in enumerate(classes_per_image):
        image_id = i + 1
        placed, instances = [], []
        for cls in classes:
            for _ in range(1 if rng.random() < 0.7 else 2):
                circle = _place(rng, cfg.image_size, placed)
                if circle is not None:
                    placed.append(circle)
                    instances.append((cls, circle))
        file_name = f"{split}/{image_id:06d}.jpg"
        anns = _render(rng, cfg.image_size, instances, os.path.join(root, file_name))
        present = sorted({a["category_id"] for a in anns})
        absent = sorted(set(range(1, num_classes + 1)) - set(present))
        neg = sorted(rng.choice(absent, size=min(2, len(absent)), replace=False).tolist())
        not_exhaustive = []
        # One image in ten: drop one instance of a class shown twice and flag the class.
        for c in present:
            same = [a for a in anns if a["category_id"] == c]
            if len(same) > 1 and rng.random() < 0.1:
                anns.remove(same[-1])
                not_exhaustive.append(c)
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "height": cfg.image_size,
                "width": cfg.image_size,
                "neg_category_ids": neg,
                "not_exhaustive_category_ids": not_exhaustive,
            }
        )
        for a in anns:
            annotations.append(dict(a, id=len(annotations) + 1, image_id=image_id))
    return {"images": images, "annotations": annotations}


def _train_classes(rng, cfg):
    """Classes of each training image: class k in ~N f (2 / (N f))^(k / (C-1)) images, f =
    ``head_image_fraction``."""
    n, c = cfg.num_train_images, cfg.num_classes
    top = max(2.0, cfg.head_image_fraction * n)
    counts = np.round(top * (2.0 / top) ** (np.arange(c) / max(c - 1, 1))).astype(int)
    per_image = [[] for _ in range(n)]
    for k in range(c):
        free = [i for i in range(n) if len(per_image[i]) < cfg.max_objects // 2 + 1]
        if len(free) < counts[k]:  # the class would silently get fewer images, or none
            raise ValueError(
                f"DATASETS.SYNTHETIC: class {k + 1} of {c} needs {counts[k]} training images but "
                f"only {len(free)} of NUM_TRAIN_IMAGES {n} have room for another class; lower "
                f"HEAD_IMAGE_FRACTION ({cfg.head_image_fraction}) or NUM_CLASSES"
            )
        for i in rng.choice(free, size=counts[k], replace=False):
            per_image[i].append(k)
    return per_image


def _eval_classes(rng, cfg, n):
    """Classes of each of ``n`` evaluation images: every class in at least
    ``min_val_images_per_class`` of them, then 1-2 random more per image."""
    c = cfg.num_classes
    per_image = [[] for _ in range(n)]
    slots = np.tile(np.arange(c), cfg.min_val_images_per_class)
    for j, k in enumerate(rng.permutation(slots)):
        per_image[j % n].append(int(k))
    for classes in per_image:
        extra = rng.choice(c, size=rng.integers(0, 2) + (0 if classes else 1), replace=False)
        classes.extend(int(k) for k in extra if k not in classes)
    return per_image


def generate_longtail_dataset(root: str, cfg: SyntheticConfig = SyntheticConfig()):
    """Writes the dataset into ``root`` (which must not exist), atomically."""
    if not 1 <= cfg.num_classes <= MAX_CLASSES:
        raise ValueError(f"DATASETS.SYNTHETIC.NUM_CLASSES must be in [1, {MAX_CLASSES}]")
    if not 0 < cfg.head_image_fraction <= 1:
        raise ValueError(
            f"DATASETS.SYNTHETIC.HEAD_IMAGE_FRACTION must be in (0, 1], got {cfg.head_image_fraction}"
        )
    rng = np.random.default_rng(cfg.seed)
    train_classes = _train_classes(rng, cfg)  # may raise: before anything is written
    tmp = f"{root.rstrip('/')}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    names = class_names(cfg.num_classes)
    train = _write_split(rng, cfg, tmp, "train", train_classes, cfg.num_classes)
    splits = {"train": train}
    splits["val"] = _write_split(
        rng, cfg, tmp, "val", _eval_classes(rng, cfg, cfg.num_val_images), cfg.num_classes
    )
    if cfg.num_test_images > 0:
        splits["test"] = _write_split(
            rng, cfg, tmp, "test", _eval_classes(rng, cfg, cfg.num_test_images), cfg.num_classes
        )

    image_count = np.zeros(cfg.num_classes, dtype=int)
    instance_count = np.zeros(cfg.num_classes, dtype=int)
    pairs = {(a["image_id"], a["category_id"]) for a in train["annotations"]}
    for _, c in pairs:
        image_count[c - 1] += 1
    for a in train["annotations"]:
        instance_count[a["category_id"] - 1] += 1
    # As in LVIS, every split lists the *training* counts and groups.
    categories = [
        {
            "id": k + 1,
            "name": name,
            "synonyms": [name],
            "frequency": freq,
            "image_count": int(image_count[k]),
            "instance_count": int(instance_count[k]),
        }
        for k, (name, freq) in enumerate(zip(names, frequency_groups(image_count)))
    ]
    for split, data in splits.items():
        with open(os.path.join(tmp, f"lvis_{split}.json"), "w") as f:
            json.dump(dict(data, categories=categories), f)
    with open(os.path.join(tmp, "generator.json"), "w") as f:
        json.dump(_params(cfg), f, indent=1)
    os.replace(tmp, root)


def _params(cfg):
    params = dict(asdict(cfg), generator_version=GENERATOR_VERSION)
    # Datasets made before these parameters existed keep their generator.json.
    if not cfg.num_test_images:
        del params["num_test_images"]
    if cfg.head_image_fraction == SyntheticConfig.head_image_fraction:
        del params["head_image_fraction"]
    return params


def ensure_synthetic_dataset(root: str, cfg: SyntheticConfig):
    """Generates the dataset in ``root`` if absent; checks its parameters if present."""
    params_file = os.path.join(root, "generator.json")
    if os.path.isdir(root):
        try:
            with open(params_file) as f:
                existing = json.load(f)
        except (OSError, json.JSONDecodeError):
            raise ValueError(f"{root} exists but is not a generated dataset (no {params_file})")
        wanted = _params(cfg)
        diff = {k: (existing.get(k), v) for k, v in wanted.items() if existing.get(k) != v}
        if diff:
            raise ValueError(
                f"{root} was generated with other parameters ((found, configured): {diff}): "
                "delete the folder or set DATASETS.SYNTHETIC.ROOT to another one"
            )
        return
    logger.info(f"Generating the long-tailed dataset in {root} ({cfg}) ...")
    os.makedirs(os.path.dirname(os.path.abspath(root)), exist_ok=True)
    try:
        generate_longtail_dataset(root, cfg)
    except OSError:
        if not os.path.isdir(root):  # another process may have won the race
            raise
