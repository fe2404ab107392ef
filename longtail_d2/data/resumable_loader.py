"""A training data loader whose stream is a function of (seed, batch number) only, so that a
resumed run sees exactly the batches, and the augmentations, of the uninterrupted one.

detectron2's ``build_detection_train_loader`` runs the sampler inside each data-loader worker
(``ToIterableDataset``), groups by aspect ratio per worker and lets every worker draw its own
augmentations from a per-worker seed: the batches depend on the number of workers and on timing,
and a resumed run restarts the stream at its beginning. Here instead:

- the main process draws the rank's index stream from the sampler (same samplers, same seed)
  and groups it into batches by aspect ratio (w > h or not) itself, in stream order;
- every element of a batch carries a seed derived from (loader seed, stream, its position in
  the global stream); the dataset seeds python ``random``, numpy and torch from it before
  calling the mapper (and restores them after), so an augmentation does not depend on the
  worker that runs it, nor on NUM_WORKERS;
- the loader counts the batches it has handed out; its ``state_dict`` (seed, next batch) goes
  into the checkpoint, and a resumed loader replays the index stream (indices only, no image is
  read) up to that batch.
"""

import logging
import random
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import DatasetFromList, DatasetMapper, get_detection_dataset_dicts
from detectron2.data.build import worker_init_reset_seed
from detectron2.data.samplers import (
    RandomSubsetTrainingSampler,
    RepeatFactorTrainingSampler,
    TrainingSampler,
)
from detectron2.utils import comm
from torch.utils.data import DataLoader, Dataset, Sampler

from .class_statistics import rfs_repeat_factors
from .named_errors import NamedErrorMapper

__all__ = [
    "ResumableTrainLoader",
    "DeterministicBatchSampler",
    "SeededMapDataset",
    "sample_seed",
    "seeded_rngs",
    "train_sampler_factory",
    "build_resumable_train_loader",
    "RESUMABLE_SAMPLERS",
]

logger = logging.getLogger(__name__)

# DATALOADER.SAMPLER_TRAIN values this loader builds (detectron2's samplers, given a seed).
RESUMABLE_SAMPLERS = (
    "TrainingSampler",
    "RepeatFactorTrainingSampler",
    "RandomSubsetTrainingSampler",
)


def sample_seed(seed: int, stream: int, position: int) -> int:
    """The 32-bit seed of the element at ``position`` of the global index stream."""
    return int(np.random.SeedSequence([seed, stream, position]).generate_state(1)[0])


@contextmanager
def seeded_rngs(seed: int):
    """python ``random``, numpy and torch's CPU generator seeded with ``seed`` inside the block,
    restored after it (the training process's own streams are left untouched; CUDA generators
    are never touched)."""
    py, np_state, th = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(th)


class SeededMapDataset(Dataset):
    """``dataset[(index, seed)]`` = ``mapper(records[index])`` under :func:`seeded_rngs` (seed).

    A mapper that returns None (an image it rejects) is retried on other images drawn from a
    generator of the same seed, as detectron2's MapDataset does but deterministically.
    """

    def __init__(self, records: Dataset, mapper: Callable):
        self.records = records
        self.mapper = mapper

    def __len__(self):
        return len(self.records)

    def __getitem__(self, item: Tuple[int, int]):
        index, seed = item
        retry = random.Random(seed)
        with seeded_rngs(seed):
            for attempt in range(100):
                data = self.mapper(self.records[index])
                if data is not None:
                    return data
                if attempt == 2:
                    logger.warning(f"the mapper rejected dataset index {index}; retrying others")
                index = retry.randrange(len(self.records))
        raise RuntimeError(f"the mapper rejected 100 images in a row (last index {index})")


class DeterministicBatchSampler:
    """The rank's batches of (dataset index, sample seed), a pure function of the seed.

    Args:
        sampler_factory: seed -> a detectron2-style sampler (an infinite stream of dataset
            indices of this rank: elements rank, rank + W, ... of a global stream).
        groups: (N,) int group of each dataset index (aspect ratio) or None (no grouping).
        batch_size: images per batch on this rank.
        seed: the shared seed of the sampler and of the per-sample seeds.
        stream: salt of the per-sample seeds (two loaders with one seed differ).
    """

    def __init__(
        self,
        sampler_factory: Callable[[int], Sampler],
        groups: Optional[np.ndarray],
        batch_size: int,
        seed: int,
        stream: int = 0,
    ):
        self.sampler_factory = sampler_factory
        self.groups = groups
        self.batch_size = batch_size
        self.seed = seed
        self.stream = stream
        self.start = 0  # number of batches to skip

    def _positions(self) -> Iterator[Tuple[int, int]]:
        """(dataset index, position in the global stream) of this rank's elements."""
        rank, world = comm.get_rank(), comm.get_world_size()
        for j, index in enumerate(self.sampler_factory(self.seed)):
            yield int(index), rank + j * world

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        buckets = {}
        produced = 0
        for index, position in self._positions():
            bucket = buckets.setdefault(0 if self.groups is None else self.groups[index], [])
            bucket.append((index, position))
            if len(bucket) < self.batch_size:
                continue
            batch = bucket[:]
            bucket.clear()
            produced += 1
            if produced > self.start:  # batches before `start` are only replayed, not loaded
                yield [(i, sample_seed(self.seed, self.stream, p)) for i, p in batch]


def _list_collate(batch):
    return batch


class ResumableTrainLoader:
    """Iterable of this rank's training batches (lists of mapped dicts), resumable exactly.

    ``state_dict()`` = {"seed", "next_batch"}: the checkpointer stores it and
    ``load_state_dict`` makes the next ``iter()`` start at that batch.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_sampler: DeterministicBatchSampler,
        num_workers: int = 0,
    ):
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        self.num_workers = num_workers
        self.next_batch = 0  # batches handed out (= the first one of the next iter())
        self.restored = False  # whether load_state_dict was called (a resumed run)

    @property
    def seed(self) -> int:
        return self.batch_sampler.seed

    def __iter__(self):
        self.batch_sampler.start = self.next_batch
        loader = DataLoader(
            self.dataset,
            batch_sampler=self.batch_sampler,
            num_workers=self.num_workers,
            collate_fn=_list_collate,
            worker_init_fn=worker_init_reset_seed,
            # Its own generator: creating the iterator must not consume the global torch RNG,
            # which is part of the training state (a resumed run creates it at another time).
            generator=torch.Generator().manual_seed(self.seed),
        )
        for batch in loader:
            self.next_batch += 1
            yield batch

    def state_dict(self):
        return {"seed": self.seed, "next_batch": self.next_batch}

    def load_state_dict(self, state):
        self.batch_sampler.seed = int(state["seed"])
        self.next_batch = int(state["next_batch"])
        self.restored = True


def _aspect_groups(dataset_dicts: Sequence[dict]) -> np.ndarray:
    """(N,) 0 for an image wider than high, else 1 (detectron2's two groups)."""
    groups = np.empty(len(dataset_dicts), dtype=np.int64)
    for i, d in enumerate(dataset_dicts):
        if "width" not in d or "height" not in d:
            raise ValueError(
                f"DATALOADER.ASPECT_RATIO_GROUPING needs the width and height of every image; "
                f"image {d.get('image_id', d.get('file_name', i))} has none"
            )
        groups[i] = 0 if d["width"] > d["height"] else 1
    return groups


def train_sampler_factory(cfg, dataset_dicts) -> Callable[[int], Sampler]:
    """seed -> the sampler DATALOADER.SAMPLER_TRAIN names, over ``dataset_dicts``."""
    name = cfg.DATALOADER.SAMPLER_TRAIN
    n = len(dataset_dicts)
    if name == "TrainingSampler":
        return lambda seed: TrainingSampler(n, seed=seed)
    if name == "RepeatFactorTrainingSampler":
        # The class statistics' counter (equal to detectron2's repeat_factors_from_...).
        factors = rfs_repeat_factors(
            dataset_dicts, cfg.DATALOADER.REPEAT_THRESHOLD, sqrt=cfg.DATALOADER.REPEAT_SQRT
        )
        return lambda seed: RepeatFactorTrainingSampler(factors, seed=seed)
    if name == "RandomSubsetTrainingSampler":
        ratio = cfg.DATALOADER.RANDOM_SUBSET_RATIO
        return lambda seed: RandomSubsetTrainingSampler(
            n, ratio, seed_shuffle=seed, seed_subset=seed
        )
    raise ValueError(
        f"DATALOADER.SAMPLER_TRAIN {name!r}: the training loader knows "
        + ", ".join(RESUMABLE_SAMPLERS)
    )


def resolve_seed(cfg) -> int:
    """DATALOADER.SEED, or (< 0) cfg.SEED, or (both < 0) a random seed agreed on by all ranks; a
    resumed run replaces it by the one in its checkpoint."""
    seed = cfg.DATALOADER.SEED if cfg.DATALOADER.SEED >= 0 else cfg.SEED
    return int(seed) if seed >= 0 else int(comm.shared_random_seed())


def build_resumable_train_loader(
    cfg,
    dataset: Optional[List[dict]] = None,
    *,
    mapper: Optional[Callable] = None,
    sampler_factory: Optional[Callable[[int], Sampler]] = None,
    total_batch_size: Optional[int] = None,
    stream: int = 0,
) -> ResumableTrainLoader:
    """The training loader of a config (a drop-in for ``build_detection_train_loader(cfg)``).

    Args:
        dataset: records; default DATASETS.TRAIN with FILTER_EMPTY_ANNOTATIONS.
        mapper: default ``DatasetMapper(cfg, is_train=True)``; wrapped in NamedErrorMapper, so
            that an image that fails to load is named (file and image id).
        sampler_factory: seed -> sampler; default DATALOADER.SAMPLER_TRAIN.
        total_batch_size: over all ranks; default SOLVER.IMS_PER_BATCH.
        stream: salt of the per-sample seeds (another loader of the same run uses another).
    """
    if dataset is None:
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE
            if cfg.MODEL.KEYPOINT_ON
            else 0,
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )
    mapper = NamedErrorMapper(DatasetMapper(cfg, True) if mapper is None else mapper)
    if sampler_factory is None:
        sampler_factory = train_sampler_factory(cfg, dataset)
    total = cfg.SOLVER.IMS_PER_BATCH if total_batch_size is None else total_batch_size
    world = comm.get_world_size()
    if total <= 0 or total % world:
        raise ValueError(f"batch size {total} is not a positive multiple of {world} processes")
    groups = _aspect_groups(dataset) if cfg.DATALOADER.ASPECT_RATIO_GROUPING else None
    seed = resolve_seed(cfg)
    logger.info(
        f"Resumable training loader: {len(dataset)} images, {total // world} per batch and "
        f"process, seed {seed}; using training sampler {cfg.DATALOADER.SAMPLER_TRAIN}"
    )
    return ResumableTrainLoader(
        SeededMapDataset(DatasetFromList(dataset, copy=False), mapper),
        DeterministicBatchSampler(sampler_factory, groups, total // world, seed, stream),
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
