"""Detections as arrays, and the files they are kept in.

A model's detections are held as a few numpy arrays (one row per detection), never as one
Python dict per detection: at LVIS v1 val scale (20 k images x 300) that is ~0.3 GB of arrays
plus the masks' compressed RLE bytes, where dicts would take ~6 GB. Each evaluation worker
appends its detections to its own ``.npz`` chunk files as images are processed
(:class:`PredictionWriter`); the main process merges the chunks (:func:`merge_predictions`) and
writes ``instances_results.json`` in the LVIS / COCO result format (:func:`write_results_json`),
which :func:`load_results_json` and ``tools/evaluate.py`` read back to the same arrays.
"""

import glob
import json
import os
from dataclasses import dataclass
from typing import Iterable, List, Optional

import numpy as np

__all__ = [
    "Detections",
    "PredictionWriter",
    "merge_predictions",
    "write_results_json",
    "load_results_json",
    "ResultsError",
]


GATHER_BATCH = 50_000  # masks whose bytes Detections.select gathers at a time


class ResultsError(ValueError):
    """Malformed results file or detections that do not fit the ground truth (one line)."""


@dataclass
class Detections:
    """
    Attributes:
        image_id: (N,) int64 dataset image ids.
        category_id: (N,) int64 dataset category ids (not detectron2's contiguous ids).
        score: (N,) float64.
        bbox: (N, 4) float64 boxes XYWH in pixels.
        rle_bytes: (B,) uint8, the compressed RLE ``counts`` of every mask, concatenated; None
            without masks.
        rle_offsets: (N + 1,) int64, mask i is ``rle_bytes[rle_offsets[i]:rle_offsets[i + 1]]``.
        mask_size: (N, 2) int64 (height, width) of each mask.
    """

    image_id: np.ndarray
    category_id: np.ndarray
    score: np.ndarray
    bbox: np.ndarray
    rle_bytes: Optional[np.ndarray] = None
    rle_offsets: Optional[np.ndarray] = None
    mask_size: Optional[np.ndarray] = None

    def __len__(self):
        return len(self.score)

    @property
    def has_masks(self) -> bool:
        return self.rle_bytes is not None

    @staticmethod
    def empty(with_masks=False) -> "Detections":
        return Detections(
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros(0, np.float64),
            np.zeros((0, 4), np.float64),
            *(
                (np.zeros(0, np.uint8), np.zeros(1, np.int64), np.zeros((0, 2), np.int64))
                if with_masks
                else (None, None, None)
            ),
        )

    @staticmethod
    def from_arrays(image_id, category_id, score, bbox, rles=None) -> "Detections":
        """``rles``: pycocotools RLE dicts ({"size": [h, w], "counts": bytes or str}) or None."""
        n = len(score)
        dets = Detections(
            np.asarray(image_id, np.int64).reshape(n),
            np.asarray(category_id, np.int64).reshape(n),
            np.asarray(score, np.float64).reshape(n),
            np.asarray(bbox, np.float64).reshape(n, 4),
        )
        if rles is not None:
            counts = [r["counts"] for r in rles]
            counts = [c.encode("ascii") if isinstance(c, str) else c for c in counts]
            lengths = np.fromiter((len(c) for c in counts), np.int64, n)
            dets.rle_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            dets.rle_bytes = np.frombuffer(b"".join(counts), np.uint8).copy()
            dets.mask_size = np.array([r["size"] for r in rles], np.int64).reshape(n, 2)
        return dets

    @staticmethod
    def from_results(results: List[dict]) -> "Detections":
        """From LVIS/COCO result dicts (``image_id``, ``category_id``, ``score``, ``bbox`` XYWH
        and / or ``segmentation`` RLE). A missing box is taken from the mask."""
        from pycocotools import mask as mask_util

        with_masks = bool(results) and all("segmentation" in r for r in results)
        if results and not with_masks and any("bbox" not in r for r in results):
            raise ResultsError("results: a detection has neither 'bbox' nor 'segmentation'")
        rles = [r["segmentation"] for r in results] if with_masks else None
        if rles is not None:
            for r in rles:
                if not (isinstance(r, dict) and "counts" in r and "size" in r):
                    raise ResultsError("results: a segmentation is not a compressed RLE dict")
        boxes = [
            r["bbox"] if "bbox" in r else mask_util.toBbox(_rle_for_api(r["segmentation"]))
            for r in results
        ]
        try:
            return Detections.from_arrays(
                [r["image_id"] for r in results],
                [r["category_id"] for r in results],
                [r["score"] for r in results],
                np.asarray(boxes, np.float64).reshape(-1, 4),
                rles,
            )
        except KeyError as e:
            raise ResultsError(f"results: a detection lacks {e.args[0]!r}") from None

    @staticmethod
    def concatenate(parts: Iterable["Detections"]) -> "Detections":
        parts = [p for p in parts if p is not None]
        if not parts:
            return Detections.empty()
        with_masks = all(p.has_masks for p in parts)
        out = Detections(
            np.concatenate([p.image_id for p in parts]),
            np.concatenate([p.category_id for p in parts]),
            np.concatenate([p.score for p in parts]),
            np.concatenate([p.bbox for p in parts]).reshape(-1, 4),
        )
        if with_masks:
            starts = np.cumsum([0] + [len(p.rle_bytes) for p in parts[:-1]])
            out.rle_bytes = np.concatenate([p.rle_bytes for p in parts])
            out.rle_offsets = np.concatenate(
                [[0]] + [p.rle_offsets[1:] + s for p, s in zip(parts, starts)]
            ).astype(np.int64)
            out.mask_size = np.concatenate([p.mask_size for p in parts]).reshape(-1, 2)
        return out

    def select(self, index: np.ndarray) -> "Detections":
        """The detections at ``index`` (int array or bool mask), in that order."""
        index = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index)
        if len(index) == len(self) and np.array_equal(index, np.arange(len(self))):
            return self  # nothing dropped (e.g. no image above the cap): no copy
        out = Detections(
            self.image_id[index], self.category_id[index], self.score[index], self.bbox[index]
        )
        if self.has_masks:
            lengths = (self.rle_offsets[1:] - self.rle_offsets[:-1])[index]
            out.rle_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            out.rle_bytes = np.empty(out.rle_offsets[-1], np.uint8)
            # Byte positions of the selected masks, gathered without a Python loop, in batches
            # (an int64 position per byte of all masks at once would be 8x their size).
            for b in range(0, len(index), GATHER_BATCH):
                sel, first = index[b : b + GATHER_BATCH], out.rle_offsets[b]
                dst = out.rle_offsets[b : b + len(sel) + 1]
                n = lengths[b : b + GATHER_BATCH]
                starts = np.repeat(self.rle_offsets[sel] - dst[:-1], n)
                positions = np.arange(first, dst[-1])
                out.rle_bytes[first : dst[-1]] = self.rle_bytes[starts + positions]
            out.mask_size = self.mask_size[index]
        return out

    def rles(self) -> List[dict]:
        """pycocotools RLE dicts ({"size": [h, w], "counts": bytes}), one per detection."""
        data = self.rle_bytes.tobytes()
        off = self.rle_offsets.tolist()
        return [
            {"size": [h, w], "counts": data[off[i] : off[i + 1]]}
            for i, (h, w) in enumerate(self.mask_size.tolist())
        ]

    def to_npz(self, path):
        arrays = {k: v for k, v in vars(self).items() if v is not None}
        np.savez(path, **arrays)

    @staticmethod
    def from_npz(path) -> "Detections":
        with np.load(path) as f:
            return Detections(**{k: f[k] for k in f.files})


def _rle_for_api(rle):
    counts = rle["counts"]
    counts = counts.encode("ascii") if isinstance(counts, str) else counts
    return {"size": rle["size"], "counts": counts}


class PredictionWriter:
    """Appends one worker's detections to ``folder/rank<r>-<k>.npz`` every ``flush_every``
    images, so a worker holds at most that many images' detections in memory."""

    def __init__(self, folder: str, rank: int, flush_every: int = 200):
        self.folder, self.rank, self.flush_every = folder, rank, flush_every
        self._pending: List[Detections] = []
        self._images = 0
        self.files: List[str] = []
        os.makedirs(folder, exist_ok=True)
        for stale in glob.glob(os.path.join(folder, f"rank{rank:03d}-*.npz")):
            os.remove(stale)  # an earlier evaluation's chunks

    def add(self, dets: Detections):
        self._pending.append(dets)
        self._images += 1
        if self._images >= self.flush_every:
            self.flush()

    def flush(self):
        if not self._pending:
            return
        path = os.path.join(self.folder, f"rank{self.rank:03d}-{len(self.files):05d}.npz")
        Detections.concatenate(self._pending).to_npz(path)
        self.files.append(path)
        self._pending, self._images = [], 0


def merge_predictions(files: List[str], remove: bool = False) -> Detections:
    """The detections of ``files`` (in that order: ranks, then chunks), optionally deleting them."""
    dets = Detections.concatenate([Detections.from_npz(f) for f in files])
    if remove:
        for f in files:
            os.remove(f)
    return dets


def write_results_json(dets: Detections, path: str, batch: int = 100_000):
    """Writes ``dets`` as a JSON list in the LVIS/COCO result format, one detection per line
    (mask ``counts`` as str), in batches so that no list of all detections is built. Floats are
    written with ``repr``: reading the file back gives the same arrays bit for bit."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("[\n")
        for start in range(0, len(dets), batch):
            part = dets.select(np.arange(start, min(start + batch, len(dets))))
            rles = part.rles() if part.has_masks else None
            lines = []
            for i, (image_id, cat, score, (x, y, w, h)) in enumerate(
                zip(
                    part.image_id.tolist(),
                    part.category_id.tolist(),
                    part.score.tolist(),
                    part.bbox.tolist(),
                )
            ):
                line = (
                    f'{{"image_id": {image_id}, "category_id": {cat}, '
                    f'"bbox": [{x!r}, {y!r}, {w!r}, {h!r}], "score": {score!r}'
                )
                if rles is not None:
                    hh, ww = rles[i]["size"]
                    counts = json.dumps(rles[i]["counts"].decode("ascii"))
                    line += f', "segmentation": {{"size": [{hh}, {ww}], "counts": {counts}}}'
                lines.append(line + "}")
            last = start + batch >= len(dets)
            f.write(",\n".join(lines) + ("\n" if last else ",\n"))
        f.write("]\n")
    os.replace(tmp, path)


def _line_records(f, path, batch):
    """Yields lists of dicts from a file written one detection per line."""
    records = []
    for lineno, line in enumerate(f, start=2):
        line = line.strip().rstrip(",")
        if line in ("", "]"):
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ResultsError(f"{path}: line {lineno} is not a JSON object ({e})") from None
        if len(records) >= batch:
            yield records
            records = []
    if records:
        yield records


def load_results_json(path: str, batch: int = 100_000) -> Detections:
    """Reads an LVIS/COCO results file (a JSON list of detections). A file written one detection
    per line (ours) is read in batches; any other layout is parsed whole."""
    if not os.path.isfile(path):
        raise ResultsError(f"{path}: results file not found")
    with open(path) as f:
        first = f.readline().strip()
        if first == "[":
            parts = [Detections.from_results(r) for r in _line_records(f, path, batch)]
            return Detections.concatenate(parts) if parts else Detections.empty()
    with open(path) as f:
        try:
            results = json.load(f)
        except json.JSONDecodeError as e:
            raise ResultsError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(results, list):
        raise ResultsError(f"{path}: a results file is a JSON list, got {type(results).__name__}")
    return Detections.from_results(results)
