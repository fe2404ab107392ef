"""A 5-image annotation file whose statistics are easy to count by hand."""

import copy
import os

from PIL import Image

# image 1: cat 10 x2, cat 20          image 2: cat 10
# image 3: cat 30 (crowd) , cat 20    image 4: cat 10, cat 30       image 5: nothing
# Non-crowd image counts: cat 10 -> 3, cat 20 -> 2, cat 30 -> 1; instances 4, 2, 1.
IMAGES = [{"id": i, "file_name": f"img{i}.png", "height": 32, "width": 32} for i in range(1, 6)]
CATEGORIES = [{"id": 10, "name": "a"}, {"id": 20, "name": "b"}, {"id": 30, "name": "c"}]
SQUARE = [[2, 2, 12, 2, 12, 12, 2, 12]]


def _ann(i, image_id, cat, iscrowd=0):
    return {
        "id": i,
        "image_id": image_id,
        "category_id": cat,
        "bbox": [2, 2, 10, 10],
        "area": 100.0,
        "segmentation": SQUARE,
        "iscrowd": iscrowd,
    }


ANNOTATIONS = [
    _ann(1, 1, 10),
    _ann(2, 1, 10),
    _ann(3, 1, 20),
    _ann(4, 2, 10),
    _ann(5, 3, 30, iscrowd=1),
    _ann(6, 3, 20),
    _ann(7, 4, 10),
    _ann(8, 4, 30),
]


def coco_dict():
    """A fresh copy (tests edit it)."""
    return copy.deepcopy({"images": IMAGES, "annotations": ANNOTATIONS, "categories": CATEGORIES})


def write_images(image_root):
    os.makedirs(image_root, exist_ok=True)
    for img in IMAGES:
        Image.new("RGB", (32, 32)).save(os.path.join(image_root, img["file_name"]))
    return str(image_root)
