"""The class-balanced sampler of BALMS's meta batches (Ren et al., "Balanced Meta-Softmax for
Long-Tailed Visual Recognition", NeurIPS 2020).

Image repeat factor r(I) = max over the classes c of I of 1 / f(c), f(c) = fraction of the
training images that contain c (no square root, threshold or floor at 1, unlike RFS).
Each pass through the data rounds r(I) stochastically, as detectron2's RepeatFactorTrainingSampler
does, and yields a uniformly random order of the resulting multiset. r(I) reaches tens of
thousands on LVIS (1 / f for a one-image class), so the multiset is never materialised: each
index is drawn without replacement in proportion to the copies left, through a Fenwick tree of
counts (O(log N) per index, O(N) memory). All ranks draw the same stream from a shared seed;
rank k keeps elements k, k + W, ...
"""

import itertools
import math

import numpy as np
import torch
from detectron2.utils import comm
from torch.utils.data import Sampler

from .class_statistics import image_class_sets

__all__ = ["class_balanced_repeat_factors", "ClassBalancedSampler"]


def class_balanced_repeat_factors(dataset_dicts) -> np.ndarray:
    """(N,) float64 r(I) = max_{c in I} 1 / f(c); 0 for an image without annotations. Counts
    come from the class statistics' counter (:func:`image_class_sets`)."""
    cats, counts = image_class_sets(dataset_dicts)
    n = len(dataset_dicts)
    return np.array([max((n / counts[k] for k in c), default=0.0) for c in cats])


class _Fenwick:
    """Counts per index with O(log N) update, total and search by cumulative count."""

    def __init__(self, counts):
        counts = np.asarray(counts, dtype=np.int64)
        self.n = len(counts)
        # Node i (1-based) holds the sum of the lowbit(i) counts ending at i.
        prefix = np.concatenate([[0], np.cumsum(counts)])
        nodes = np.arange(1, self.n + 1)
        self.tree = np.zeros(self.n + 1, dtype=np.int64)
        self.tree[1:] = prefix[nodes] - prefix[nodes - (nodes & -nodes)]
        self.total = int(prefix[-1])

    def add(self, i, delta):
        i += 1
        while i <= self.n:
            self.tree[i] += delta
            i += i & -i

    def find(self, target):
        """The index whose cumulative-count interval contains ``target`` (0 <= target < total)."""
        pos, step = 0, 1 << self.n.bit_length()
        while step:
            nxt = pos + step
            if nxt <= self.n and self.tree[nxt] <= target:
                pos = nxt
                target -= self.tree[nxt]
            step >>= 1
        return pos


class ClassBalancedSampler(Sampler):
    """Infinite stream of dataset indices, class-balanced by repeat factors (see module doc)."""

    def __init__(self, repeat_factors, seed=None):
        """
        Args:
            repeat_factors: (N,) r(I) >= 0; see :func:`class_balanced_repeat_factors`.
            seed: shared by all ranks; None = a random seed agreed on by all ranks.
        """
        self._factors = np.asarray(repeat_factors, dtype=np.float64)
        if not (self._factors > 0).any():
            raise ValueError("ClassBalancedSampler: no image has a positive repeat factor")
        self._seed = int(comm.shared_random_seed() if seed is None else seed)
        self._rank, self._world_size = comm.get_rank(), comm.get_world_size()

    def _pass(self, generator):
        """One pass: stochastic rounding, then the multiset in uniformly random order."""
        frac = torch.rand(len(self._factors), generator=generator, dtype=torch.float64).numpy()
        copies = np.floor(self._factors) + (frac < self._factors - np.floor(self._factors))
        tree = _Fenwick(copies.astype(np.int64))
        for left in range(tree.total, 0, -1):
            target = int(torch.randint(left, (1,), generator=generator))
            index = tree.find(target)
            tree.add(index, -1)
            yield index

    def _infinite(self):
        g = torch.Generator().manual_seed(self._seed)
        while True:
            yield from self._pass(g)

    def __iter__(self):
        yield from itertools.islice(self._infinite(), self._rank, None, self._world_size)

    def expected_pass_length(self) -> float:
        """E[number of indices per pass] = sum_I r(I)."""
        return float(math.fsum(self._factors))
