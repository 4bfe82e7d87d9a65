"""Vectorised building blocks of need gains (EVALUATION.md §3), over torch tensors.

Examples:
    >>> interest(torch.tensor([2.0, 3.0, 4.0, 5.0, float("nan")]), threshold=3.0, maximum=5.0)
    tensor([0.0000, 0.0000, 0.5000, 1.0000, 0.0000])

    Examples:
        >>> percentile(torch.tensor([[0.0, 5.0, 5.0, 9.0]]))
        tensor([[0.0000, 0.5000, 0.5000, 1.0000]])
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["interest", "novelty", "percentile"]


def interest(labels: Tensor, threshold: float, maximum: float) -> Tensor:
    """``clip(label − τ, 0, max − τ) / (max − τ)``; 0 where the label is NaN (unobserved).

    Args:
        labels: ``[..., K]`` raw labels.
        threshold: τ.
        maximum: the label at which interest saturates.

    Returns:
        ``[..., K]`` float in ``[0, 1]``.
    """
    span = maximum - threshold
    if span <= 0:
        raise ValueError(f"maximum ({maximum}) must exceed the interest threshold ({threshold})")
    value = ((labels.float() - threshold).clamp(0.0, span) / span).nan_to_num(0.0)
    return value


def novelty(history_categories: Tensor, candidate_categories: Tensor) -> Tensor:
    """Share of each candidate's categories absent from the history's categories.

    Items without any category have novelty 0 (nothing new can be said about them).

    Args:
        history_categories: ``[..., C]`` bool, union of the history items' categories.
        candidate_categories: ``[..., K, C]`` bool multi-hot of each candidate.

    Returns:
        ``[..., K]`` float in ``[0, 1]``.
    """
    cand = candidate_categories.bool()
    seen = history_categories.bool().unsqueeze(-2)
    total = cand.sum(-1)
    new = (cand & ~seen).sum(-1)
    return torch.where(total > 0, new.float() / total.clamp_min(1).float(), torch.zeros(()))


def percentile(counts: Tensor) -> Tensor:
    """Percentile rank of each count among the ``K`` candidates of its task (ties share the mean rank).

    ``(#smaller + ½ #equal-others) / (K − 1)``: the smallest gets 0, the largest 1, all-equal 0.5.

    Args:
        counts: ``[..., K]`` interaction counts.

    Returns:
        ``[..., K]`` float in ``[0, 1]``.
    """
    k = counts.shape[-1]
    if k < 2:
        return torch.full_like(counts, 0.5, dtype=torch.float)
    c = counts.float()
    smaller = (c.unsqueeze(-1) > c.unsqueeze(-2)).sum(-1).float()
    equal = (c.unsqueeze(-1) == c.unsqueeze(-2)).sum(-1).float() - 1.0
    return (smaller + 0.5 * equal) / (k - 1)
