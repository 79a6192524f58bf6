"""Segment reductions on torch's own index ops (no torch_scatter)."""

from __future__ import annotations

import torch


def segment_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """out[s] = Σ_{e: index[e] = s} src[e] along dim 0."""
    out = src.new_zeros((dim_size, *src.shape[1:]))
    return out.index_add_(0, index, src)


def segment_mean(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    total = segment_sum(src, index, dim_size)
    count = torch.bincount(index, minlength=dim_size).clamp_min(1).to(src.dtype)
    return total / count.view(-1, *([1] * (src.dim() - 1)))
