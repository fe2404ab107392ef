"""Collectives for per-class statistics: no-ops in a single process, on any device."""

import torch
import torch.distributed as dist

__all__ = ["all_reduce_sum"]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over all ranks (a new tensor; the input is left unchanged)."""
    out = tensor.clone()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out
