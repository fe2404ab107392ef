"""How often each class is seen in a run's training stream: the training loader's own index
stream (sampler, seed, aspect-ratio batches; :mod:`.resumable_loader`) replayed for the run's
iterations without reading an image, so that a class's result in one run can be set against
how often, and how late, that run showed it its images."""

import itertools
from typing import Sequence

import numpy as np

from .resumable_loader import build_resumable_train_loader

__all__ = ["class_exposure"]


def class_exposure(cfg, dataset_dicts: Sequence[dict], num_classes: int, late_from: int):
    """
    The exposure of each class in the first ``cfg.SOLVER.MAX_ITER`` batches of the stream that
    ``build_resumable_train_loader(cfg, dataset_dicts)`` hands a single-process run (a run with
    W processes splits the same global stream W ways). An image counts once per class it holds.

    Args:
        cfg: the run's config (DATALOADER.SAMPLER_TRAIN, SEED / DATALOADER.SEED,
            ASPECT_RATIO_GROUPING, SOLVER.IMS_PER_BATCH, SOLVER.MAX_ITER).
        dataset_dicts: the training records, in the loader's order, ``category_id`` contiguous.
        num_classes: C.
        late_from: first iteration counted as late (e.g. the first LR step).
    Returns:
        int array (C, 3): images of the class seen in all iterations, seen from ``late_from``
        on, and the last iteration that showed one (-1: never).
    """
    classes = [{a["category_id"] for a in d.get("annotations", [])} for d in dataset_dicts]
    # The loader's own batch sampler: (index, sample seed) batches, no image read.
    batches = build_resumable_train_loader(cfg, dataset_dicts).batch_sampler
    exposure = np.zeros((num_classes, 3), dtype=np.int64)
    exposure[:, 2] = -1
    for iteration, batch in enumerate(itertools.islice(iter(batches), cfg.SOLVER.MAX_ITER)):
        for index, _ in batch:
            for c in classes[index]:
                exposure[c, 0] += 1
                exposure[c, 1] += iteration >= late_from
                exposure[c, 2] = iteration
    return exposure
