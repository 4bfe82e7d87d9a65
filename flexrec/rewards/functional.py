"""Pure tensor functions for NDCG and FlexRec's item-level rewards.

Every function takes gains **in placed order** ``placed_gains[..., k]`` = the gain of the item placed
at rank ``k`` (0-based here; the formulas in the docstrings use 1-based ranks as METHOD.md does) and
works on any leading dimensions, typically ``[B, G, K]``. Gains must be ``>= 0`` (graded gains are
fine). The discount is ``D(p) = 1 / log2(p + 1)`` for ``p <= c`` and ``0`` beyond the cutoff ``c``;
``cutoff=None`` means ``c = K``. The ideal DCG (IDCG) uses the same gains sorted descending and the
same cutoff; wherever IDCG is 0 (no positive gain inside the cutoff, or an IDCG so small that its
reciprocal overflows) the metric and every reward are 0.

Worked example of METHOD.md (K = 4, gains in placed order ``(0, 1, 3, 0)``):

Examples:
    >>> g = torch.tensor([0.0, 1.0, 3.0, 0.0], dtype=torch.float64)
    >>> round(ndcg(g, None).item(), 6)
    0.586883
    >>> [round(v, 6) for v in swap_rewards(g, None).tolist()]
    [-0.171588, -0.008484, 0.057277, 0.0]
    >>> [round(v, 6) for v in swap_rewards(g, 2).tolist()]
    [-0.309294, -0.086883, 0.0, 0.0]
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "discounts",
    "idcg",
    "independent_rewards",
    "ndcg",
    "rank_dcg_rewards",
    "rank_weights",
    "sequence_rewards",
    "swap_noncausal_rewards",
    "swap_rewards",
]


def _check_cutoff(cutoff: int | None) -> None:
    if cutoff is not None and cutoff < 1:
        raise ValueError(f"cutoff must be >= 1 or None (the full list), got {cutoff}")


def discounts(
    k: int,
    cutoff: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Rank discounts ``D(p) = 1 / log2(p + 1)`` for 1-based ``p <= c``, else 0.

    Args:
        k: list length ``K``.
        cutoff: ``c``; ``None`` (or anything ``>= K``) keeps every rank.
        dtype: floating dtype of the result.
        device: device of the result.

    Returns:
        ``[K]`` discounts; ``out[i]`` is the discount of 0-based rank ``i``.

    Examples:
        >>> discounts(4).mul(1e6).round().tolist()
        [1000000.0, 630930.0, 500000.0, 430677.0]
        >>> discounts(4, cutoff=2).mul(1e6).round().tolist()
        [1000000.0, 630930.0, 0.0, 0.0]
    """
    _check_cutoff(cutoff)
    positions = torch.arange(1, k + 1, dtype=torch.float64, device=device)
    out = 1.0 / torch.log2(positions + 1.0)
    if cutoff is not None and cutoff < k:
        out[cutoff:] = 0.0
    return out.to(dtype)


def idcg(placed_gains: Tensor, cutoff: int | None = None) -> Tensor:
    """Ideal DCG: the DCG of the same gains sorted descending, with the same cutoff.

    Args:
        placed_gains: ``[..., K]`` gains (any order).
        cutoff: NDCG cutoff ``c`` or ``None`` for ``c = K``.

    Returns:
        ``[...]`` ideal DCG.

    Examples:
        >>> idcg(torch.tensor([0.0, 1.0, 3.0, 0.0]), 1).item()
        3.0
    """
    d = discounts(placed_gains.shape[-1], cutoff, placed_gains.dtype, placed_gains.device)
    ideal = torch.sort(placed_gains, dim=-1, descending=True).values
    return (ideal * d).sum(-1)


def _inverse_idcg(placed_gains: Tensor, d: Tensor) -> Tensor:
    """``[..., 1]`` 1/IDCG, and 0 where IDCG = 0 (no positive gain inside the cutoff).

    An IDCG below the dtype's smallest normal number also counts as 0: its reciprocal overflows.
    """
    ideal = (torch.sort(placed_gains, dim=-1, descending=True).values * d).sum(-1, keepdim=True)
    positive = ideal >= torch.finfo(ideal.dtype).tiny
    return torch.where(positive, 1.0 / torch.where(positive, ideal, 1.0), 0.0)


def rank_weights(placed_gains: Tensor, cutoff: int | None = None) -> Tensor:
    """Weight of each rank in NDCG: ``w_k = D(k) / IDCG``, all zero where IDCG = 0.

    ``NDCG = sum_k w_k g_k``, so ``w_k`` is also the sensitivity of the list metric to the gain at
    rank ``k`` (used by the uncertainty-aware estimator).

    Args:
        placed_gains: ``[..., K]`` gains in placed order (only their multiset matters here).
        cutoff: NDCG cutoff ``c`` or ``None`` for ``c = K``.

    Returns:
        ``[..., K]`` rank weights.

    Examples:
        >>> rank_weights(torch.tensor([[0.0, 2.0], [0.0, 0.0]])).mul(1e4).round().tolist()
        [[5000.0, 3155.0], [0.0, 0.0]]
    """
    d = discounts(placed_gains.shape[-1], cutoff, placed_gains.dtype, placed_gains.device)
    return d * _inverse_idcg(placed_gains, d)


def ndcg(placed_gains: Tensor, cutoff: int | None = None) -> Tensor:
    """NDCG@c of lists given their gains in placed order; 0 where IDCG = 0.

    Args:
        placed_gains: ``[..., K]`` gains ``>= 0`` in placed order (graded gains allowed).
        cutoff: NDCG cutoff ``c`` or ``None`` for ``c = K``.

    Returns:
        ``[...]`` NDCG in ``[0, 1]``.

    Examples:
        >>> ndcg(torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.0, 0.0]])).tolist()
        [1.0, 0.0]
    """
    return (placed_gains * rank_weights(placed_gains, cutoff)).sum(-1)


def sequence_rewards(placed_gains: Tensor, cutoff: int | None = None) -> Tensor:
    """Sequence-level reward (GRPO / Rec-R1 style): ``r_k = R(y)`` for every rank ``k``.

    Args:
        placed_gains: ``[..., K]`` gains in placed order.
        cutoff: NDCG cutoff ``c`` or ``None`` for ``c = K``.

    Returns:
        ``[..., K]`` the list's NDCG repeated at every rank.

    Examples:
        >>> sequence_rewards(torch.tensor([1.0, 0.0])).tolist()
        [1.0, 1.0]
    """
    return ndcg(placed_gains, cutoff).unsqueeze(-1).expand_as(placed_gains).clone()


def independent_rewards(placed_gains: Tensor, cutoff: int | None = None) -> Tensor:
    """Independent item reward: ``r_k = g(a_k) D(k) / IDCG`` (no counterfactual).

    The rewards of a list sum to its NDCG.

    Args:
        placed_gains: ``[..., K]`` gains in placed order.
        cutoff: NDCG cutoff ``c`` or ``None`` for ``c = K``.

    Returns:
        ``[..., K]`` item rewards.

    Examples:
        >>> g = torch.tensor([0.0, 1.0, 3.0, 0.0], dtype=torch.float64)
        >>> [round(v, 6) for v in independent_rewards(g).tolist()]
        [0.0, 0.173765, 0.413117, 0.0]
    """
    return placed_gains * rank_weights(placed_gains, cutoff)


def rank_dcg_rewards(placed_gains: Tensor, cutoff: int | None = None) -> Tensor:
    """Rank-GRPO-style causal suffix reward: ``r_k = sum_{j >= k} g(a_j) D(j) / IDCG``.

    Args:
        placed_gains: ``[..., K]`` gains in placed order.
        cutoff: NDCG cutoff ``c`` or ``None`` for ``c = K``.

    Returns:
        ``[..., K]`` item rewards; ``r_1`` is the list's NDCG.

    Examples:
        >>> g = torch.tensor([0.0, 1.0, 3.0, 0.0], dtype=torch.float64)
        >>> [round(v, 6) for v in rank_dcg_rewards(g).tolist()]
        [0.586883, 0.586883, 0.413117, 0.0]
    """
    gains_weighted = independent_rewards(placed_gains, cutoff)
    return _suffix_sum(gains_weighted, inclusive=True)


def _suffix_sum(x: Tensor, inclusive: bool) -> Tensor:
    """Suffix sums along the last dim: ``sum_{j >= k}`` (inclusive) or ``sum_{j > k}``.

    Computed as ``total - prefix`` from a single cumsum; ``total`` is the cumsum's last entry so
    that a suffix of exact zeros gives an exact zero.
    """
    prefix = torch.cumsum(x, dim=-1)
    total = prefix[..., -1:]
    exclusive = total - prefix
    return exclusive + x if inclusive else exclusive


def swap_rewards(placed_gains: Tensor, cutoff: int | None = None) -> Tensor:
    """FlexRec's causal swap reward: mean NDCG loss of swapping ``a_k`` with a later item.

    ``r_k = (1 / (K - k)) * sum_{j > k} [R(y) - R(y^{k<->j})]`` and ``r_K = 0`` (1-based ``k``):
    the partners are the items still in the pool when ``a_k`` was chosen. For NDCG,
    ``R(y) - R(y^{k<->j}) = (g_k - g_j)(D_k - D_j) / IDCG`` (the swap leaves IDCG unchanged), and
    the sum over ``j > k`` expands into suffix sums
    ``(K - k) g_k D_k - g_k S_D(k) - D_k S_g(k) + S_gD(k)`` with ``S_x(k) = sum_{j > k} x_j``, so the
    whole reward costs O(K) per list after the sort for IDCG. The sign (positive = better than
    the alternatives it was chosen over) and the mean over partners are conventions.

    Args:
        placed_gains: ``[..., K]`` gains in placed order.
        cutoff: NDCG cutoff ``c`` or ``None`` for ``c = K``.

    Returns:
        ``[..., K]`` item rewards.

    Examples:
        >>> g = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        >>> swap_rewards(g).mul(1e6).round().tolist()
        [[369070.0, 0.0], [-369070.0, 0.0]]
    """
    k = placed_gains.shape[-1]
    d = discounts(k, cutoff, placed_gains.dtype, placed_gains.device)
    partners = torch.arange(k - 1, -1, -1, dtype=placed_gains.dtype, device=placed_gains.device)
    suffix_d = _suffix_sum(d, inclusive=False)
    sums = _suffix_sum(torch.stack([placed_gains, placed_gains * d]), inclusive=False)
    total = placed_gains * (partners * d - suffix_d) - d * sums[0] + sums[1]
    mean = total / partners.clamp(min=1.0)
    return mean * _inverse_idcg(placed_gains, d)


def swap_noncausal_rewards(placed_gains: Tensor, cutoff: int | None = None) -> Tensor:
    """Non-causal swap reward: like :func:`swap_rewards` with partners ``j != k`` over the list.

    ``r_k = (1 / (K - 1)) * sum_{j != k} (g_k - g_j)(D_k - D_j) / IDCG``; 0 when ``K = 1``
    (ablation of paper Table 7). Computed from list totals in O(K) per list.

    Args:
        placed_gains: ``[..., K]`` gains in placed order.
        cutoff: NDCG cutoff ``c`` or ``None`` for ``c = K``.

    Returns:
        ``[..., K]`` item rewards.

    Examples:
        >>> g = torch.tensor([1.0, 0.0], dtype=torch.float64)
        >>> [round(v, 6) for v in swap_noncausal_rewards(g).tolist()]
        [0.36907, 0.36907]
    """
    k = placed_gains.shape[-1]
    d = discounts(k, cutoff, placed_gains.dtype, placed_gains.device)
    total_g = placed_gains.sum(-1, keepdim=True)
    total_gd = (placed_gains * d).sum(-1, keepdim=True)
    total = placed_gains * (k * d - d.sum()) - d * total_g + total_gd
    return total / max(k - 1, 1) * _inverse_idcg(placed_gains, d)
