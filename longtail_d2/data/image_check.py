"""Check the image files of a dataset before a run: each one opens, is complete, and has the
size its annotation file gives. Files are read in parallel threads; results are cached by
(path, file size, mtime) so that a second start only stats the files.

Cost per image: the header (format, size, EXIF orientation) and the last bytes (a JPEG ends with
its EOI marker, a PNG with its IEND chunk). Only an image without that end, or of another
format, is decoded in full to tell a truncated file from an unusual but complete one.
"""

import hashlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, List, Optional, Tuple

from PIL import Image

from .lvis_json import DatasetError

__all__ = ["check_image_files", "image_check_cache_file", "inspect_image"]

_CACHE_VERSION = 1
# EXIF orientations that swap width and height (detectron2's read_image applies them).
_TRANSPOSED = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112


def _ends_complete(path: str, fmt: Optional[str]) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64))
        tail = f.read()
    if fmt == "JPEG":
        return tail.rstrip(b"\0").endswith(b"\xff\xd9")
    if fmt == "PNG":
        return b"IEND" in tail[-12:]
    return False


def inspect_image(path: str) -> Tuple[int, int]:
    """(width, height) of an image as detectron2 reads it (after EXIF rotation).

    Raises:
        OSError / ValueError (PIL's) if the file cannot be opened or is truncated.
    """
    with Image.open(path) as im:
        width, height = im.size
        fmt = im.format
        orientation = im.getexif().get(_EXIF_ORIENTATION, 1) if fmt in ("JPEG", "TIFF") else 1
    if not _ends_complete(path, fmt):
        with Image.open(path) as im:
            im.load()  # raises "image file is truncated" for an incomplete file
    if orientation in _TRANSPOSED:
        width, height = height, width
    return width, height


def image_check_cache_file(json_file: str) -> str:
    """The cache of one annotation file, under $XDG_CACHE_HOME (default ~/.cache)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = hashlib.sha1(os.path.abspath(json_file).encode()).hexdigest()[:16]
    name = os.path.splitext(os.path.basename(json_file))[0]
    return os.path.join(root, "longtail_d2", "image_check", f"{name}-{key}.json")


def _read_cache(path: str) -> Dict[str, list]:
    try:
        with open(path) as f:
            data = json.load(f)
        return data["images"] if data.get("version") == _CACHE_VERSION else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # absent or unreadable: check everything again


def _write_cache(path: str, images: Dict[str, list]):
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "w") as f:
            json.dump({"version": _CACHE_VERSION, "images": images}, f)
        os.replace(tmp, path)  # readers see the old or the new file, never half of one
    except OSError:
        pass  # a read-only cache folder only costs the next start its speed


def _check_one(path: str):
    """(stat key, (width, height) or the error text)."""
    try:
        st = os.stat(path)
    except OSError as e:
        return None, f"cannot be read ({e.strerror})"
    try:
        return [st.st_size, st.st_mtime_ns], inspect_image(path)
    except Exception as e:  # PIL raises many types for broken files
        return None, f"is truncated or corrupt ({type(e).__name__}: {' '.join(str(e).split())})"


class _Progress:
    """A line on stderr every 10% when there are at least ``min_items`` images to open."""

    def __init__(self, what: str, total: int, min_items: int = 2000):
        self.what, self.total, self.step = what, total, max(1, total // 10)
        self.enabled = total >= min_items
        self.start = time.perf_counter()

    def update(self, done: int):
        if self.enabled and (done % self.step == 0 or done == self.total):
            rate = done / max(time.perf_counter() - self.start, 1e-9)
            print(
                f"checking images of {self.what}: {done}/{self.total} "
                f"({100 * done // self.total}%, {rate:.0f}/s)",
                file=sys.stderr,
                flush=True,
            )


def check_image_files(
    records: Iterable[dict],
    json_file: str,
    num_threads: Optional[int] = None,
    use_cache: bool = True,
):
    """
    Args:
        records: detectron2 dataset dicts (``file_name``, ``image_id``, ``width``, ``height``).
        json_file: the annotation file they come from (named in errors; keys the cache).
        num_threads: parallel readers (default: 4 per CPU, at most 32; reading is I/O bound).
        use_cache: read and update the cache (:func:`image_check_cache_file`).

    Raises:
        DatasetError: for the first bad image (in file order), naming the image file, its id
            and the key ('file_name' or 'width'/'height'), and how many others are bad.
    """
    records = list(records)
    cache_file = image_check_cache_file(json_file)
    cache = _read_cache(cache_file) if use_cache else {}
    found: Dict[str, Tuple[int, int]] = {}
    todo: List[str] = []
    for r in records:
        path = os.path.abspath(r["file_name"])
        entry = cache.get(path)
        try:
            st = os.stat(path)
            if entry and entry[:2] == [st.st_size, st.st_mtime_ns]:
                found[path] = tuple(entry[2:4])
                continue
        except OSError:
            pass
        todo.append(path)
    todo = list(dict.fromkeys(todo))

    errors: Dict[str, str] = {}
    if todo:
        threads = num_threads or min(32, 4 * (os.cpu_count() or 1))
        progress = _Progress(os.path.basename(json_file), len(todo))
        with ThreadPoolExecutor(threads) as pool:
            for done, (path, (key, result)) in enumerate(
                zip(todo, pool.map(_check_one, todo)), start=1
            ):
                if key is None:
                    errors[path] = result
                else:
                    found[path] = result
                    cache[path] = key + list(result)
                progress.update(done)
        if use_cache:
            _write_cache(cache_file, cache)

    problems = []
    for r in records:
        path = os.path.abspath(r["file_name"])
        where = f"{json_file}: image id {r['image_id']}: 'file_name' {r['file_name']}"
        if path in errors:
            problems.append(f"{where} {errors[path]}")
        elif tuple(found[path]) != (r["width"], r["height"]):
            w, h = found[path]
            problems.append(
                f"{json_file}: image id {r['image_id']}: 'width' x 'height' = "
                f"{r['width']} x {r['height']}, but {r['file_name']} is {w} x {h} pixels"
            )
    if problems:
        more = f" (and {len(problems) - 1} more bad images)" if len(problems) > 1 else ""
        raise DatasetError(problems[0] + more)
