"""Feature Augmentation and Sampling Adaptation (Zang et al., "FASA: Feature Augmentation and
Sampling Adaptation for Long-Tailed Instance Segmentation", ICCV 2021; reference implementation
yuhangzang/FASA).

- Class-wise statistics of the classifier input: per class, an EMA (weight ``momentum`` on the
  batch) of the batch mean and of the batch (unbiased) variance of its positive RoIs' features;
  the first batch of a class sets them. Summed over all workers (the reference: per GPU).
- Virtual features: each step every class c is drawn with probability p_c; a drawn class with
  statistics gives one feature mu_c + sigma_c * eps, eps ~ N(0, I), which trains the classifier
  only.
- Initial p_c proportional to (1 / n_c)^power (n_c: training instances), scaled to sum to ``scale``.
- Sampling adaptation: classes are grouped by affinity propagation on the *similarity*
  -||mu_i - mu_j||^2 (the reference passes distances, which inverts the meaning); a group whose
  summed held-out loss rose since the previous adaptation has its p multiplied by ``down``, one
  whose loss fell by ``up``.
"""

import logging
import warnings

import numpy as np
import torch
from torch import nn

from .distributed import all_reduce_sum

__all__ = [
    "FeatureStatistics",
    "initial_probabilities",
    "draw_virtual_features",
    "class_groups",
    "adapt_probabilities",
]

logger = logging.getLogger(__name__)


class FeatureStatistics(nn.Module):
    """Buffers ``mean`` (C, D), ``var`` (C, D) and ``used`` (C,) (1 once a class has stats)."""

    def __init__(self, num_classes: int, dim: int, momentum: float = 0.1):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("mean", torch.zeros(num_classes, dim))
        self.register_buffer("var", torch.zeros(num_classes, dim))
        self.register_buffer("used", torch.zeros(num_classes))

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor):
        """
        Args:
            features: (P, D) classifier inputs of the positive RoIs.
            labels: (P,) their classes in [0, C).
        """
        C, D = self.mean.shape
        x = features.to(torch.float64)  # sums of squares: keep the variance accurate
        sums = x.new_zeros(C, 2 * D + 1)
        sums[:, :D].index_add_(0, labels, x)
        sums[:, D : 2 * D].index_add_(0, labels, x * x)
        sums[:, 2 * D].index_add_(0, labels, torch.ones_like(labels, dtype=x.dtype))
        sums = all_reduce_sum(sums)
        n = sums[:, 2 * D]
        present = n > 0
        if not present.any():
            return
        n_p = n[present, None]
        mean = sums[present, :D] / n_p
        # Unbiased batch variance; 0 for a class with a single RoI.
        var = ((sums[present, D : 2 * D] - n_p * mean * mean) / (n_p - 1).clamp(min=1)).clamp(min=0)
        var[n[present] < 2] = 0
        first = self.used[present] == 0
        w = torch.where(first, 1.0, self.momentum).to(mean.dtype)[:, None]
        self.mean[present] = (w * mean + (1 - w) * self.mean[present]).to(self.mean.dtype)
        self.var[present] = (w * var + (1 - w) * self.var[present]).to(self.var.dtype)
        self.used[present] = 1


def initial_probabilities(instance_count, power: float = 1.0, scale: float = 1.0):
    """(C,) p_c = clamp(scale * ((1 / n_c) / sum_k 1 / n_k)^power, 0, 1); n_c >= 1 assumed
    (a class without instances counts as one)."""
    inv = 1.0 / torch.as_tensor(instance_count, dtype=torch.float64).clamp(min=1)
    return (scale * (inv / inv.sum()) ** power).clamp(0, 1).to(torch.float32)


def draw_virtual_features(stats: FeatureStatistics, probs: torch.Tensor):
    """Each class with statistics is drawn with probability p_c (torch's global generator);
    returns (K, D) features mu + sqrt(var) * eps and their (K,) labels."""
    drawn = (torch.rand(probs.shape, device=probs.device) < probs) & (stats.used > 0)
    labels = drawn.nonzero()[:, 0]
    noise = torch.randn(len(labels), stats.mean.shape[1], device=probs.device)
    return stats.mean[labels] + stats.var[labels].sqrt() * noise, labels


def class_groups(
    means: torch.Tensor,
    seed: int = 1,
    damping: float = 0.9,
    max_iter: int = 1000,
    convergence_iter: int = 50,
) -> np.ndarray:
    """(C,) group label of each class by affinity propagation on -||mu_i - mu_j||^2; if it does
    not converge, every class is its own group (logged as a warning).

    damping 0.9 and max_iter 1000, not sklearn's 0.5 and 200: on these squared distances the
    defaults oscillate and fail to converge for about half of synthetic cases with C 120-1203,
    which silently made the adaptation per class; 0.9 / 1000 converge and recover planted groups.
    Damped messages move slowly, so "converged" needs the exemplars stable for
    ``convergence_iter`` 50 iterations (sklearn: 15), else 4 classes in 2 tight pairs stop
    early at one group per class.
    """
    from sklearn.cluster import AffinityPropagation
    from sklearn.exceptions import ConvergenceWarning

    x = means.double().cpu().numpy()
    similarity = -((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        labels = AffinityPropagation(
            affinity="precomputed",
            random_state=seed,
            damping=damping,
            max_iter=max_iter,
            convergence_iter=convergence_iter,
        ).fit_predict(similarity)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught) or (labels < 0).any():
        logger.warning(
            f"FASA: affinity propagation of {len(x)} classes did not converge in {max_iter} "
            f"iterations (damping {damping}); falling back to one group per class"
        )
        return np.arange(len(x))
    return labels


def adapt_probabilities(probs, groups, losses, previous, up: float = 1.1, down: float = 0.9):
    """
    Args:
        probs: (C,) sampling probabilities; groups: (C,) group labels.
        losses, previous: (C,) per-class held-out losses now and at the previous adaptation.
    Returns:
        (C,) new probabilities: x ``down`` for the classes of a group whose summed loss rose,
        x ``up`` where it fell, clamped to [0, 1].
    """
    groups = torch.as_tensor(groups, device=probs.device)
    out = probs.clone()
    for g in torch.unique(groups):
        members = groups == g
        delta = losses[members].sum() - previous[members].sum()
        if delta > 0:
            out[members] *= down
        elif delta < 0:
            out[members] *= up
    return out.clamp(0, 1)
