"""Pure tensor functions mapping item rewards ``[B, G, K]`` to advantages ``[B, G, K]``.

Sets used by baselines, scales and normalisations:

- ``position``: the ``G`` rollouts of one task at one rank ``k`` (``[B, 1, K]`` statistics);
- ``group``: the ``G x K`` item rewards of one task (``[B, 1, 1]`` statistics);
- ``batch``: every item reward of the batch (a scalar).

Standard deviations are population standard deviations (``unbiased=False``, divide by the set
size), a *convention*; TRL and verl divide by ``n - 1``, which only rescales advantages by
``sqrt((G - 1) / G)`` for sequence rewards.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "BASELINES",
    "NORMALIZATIONS",
    "SCALES",
    "UNCERTAINTY_LEVELS",
    "check_choice",
    "check_finite",
    "group_relative",
    "rloo",
    "uncertainty_weights",
]

BASELINES = ("position", "group")
SCALES = ("group", "position", "batch", "none")
NORMALIZATIONS = ("batch", "group", "none")
UNCERTAINTY_LEVELS = ("rollout", "item")


def check_choice(argument: str, value: str, options: tuple[str, ...]) -> None:
    """Raise a one-line ``ValueError`` unless ``value`` is one of ``options``.

    Examples:
        >>> check_choice("scale", "group", SCALES)
    """
    if value not in options:
        raise ValueError(f"unknown {argument} {value!r}; valid options: {', '.join(options)}")


def check_finite(values: Tensor, what: str = "rewards") -> None:
    """Raise a one-line ``ValueError`` if ``values`` holds a NaN or an infinity.

    Args:
        values: any tensor, e.g. rewards ``[B, G, K]``.
        what: name of the tensor in the message.

    Examples:
        >>> check_finite(torch.tensor([0.0, float("nan")]))
        Traceback (most recent call last):
        ...
        ValueError: rewards contain 1 NaN of 2 values (first at index (1,)); check the gains and the feedback model that filled them
    """
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        nan = int(torch.isnan(values).sum())
        kind = f"{nan} NaN" if nan else f"{int(bad.sum())} infinite value(s)"
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{what} contain {kind} of {values.numel()} values (first at index {first}); "
            "check the gains and the feedback model that filled them"
        )


def _check_shape(rewards: Tensor) -> None:
    if rewards.dim() != 3:
        raise ValueError(f"rewards must have shape [B, G, K], got {tuple(rewards.shape)}")


def _dims(which: str) -> tuple[int, ...]:
    """Reduction dims of a ``[B, G, K]`` tensor for a set name."""
    return {"position": (1,), "group": (1, 2), "batch": (0, 1, 2)}[which]


def group_relative(
    rewards: Tensor,
    baseline: str = "position",
    scale: str = "group",
    eps: float = 1e-6,
) -> Tensor:
    """Group-relative advantages ``A = (r - b) / (s + eps)`` (GRPO; Dr. GRPO with ``scale="none"``).

    The baseline ``b`` is the mean reward over the ``baseline`` set (``position``: the G rollouts at
    the same rank; ``group``: all G x K item rewards of the task). The scale ``s`` is the population
    standard deviation of the centred rewards ``r - b`` over the ``scale`` set, i.e. the root mean
    square of ``r - b`` over ``position`` (G values), ``group`` (G x K values of the task) or
    ``batch`` (all values); ``none`` divides by nothing (and ignores ``eps``). With
    ``baseline="group"`` and ``scale="group"`` this is the task's plain reward std; with
    ``baseline="position"`` and ``scale="group"`` it is the pooled within-position std, which keeps
    the relative size of the ranks' advantages (a rank where all rollouts agree is not inflated).
    For the ``sequence`` reward (``r_{i,k} = R(y_i)`` for all ``k``) every combination of
    ``position``/``group`` equals standard GRPO: ``(R_i - mean_g R) / (std_g R + eps)``.

    Args:
        rewards: ``[B, G, K]`` item rewards.
        baseline: ``"position"`` or ``"group"``.
        scale: ``"group"``, ``"position"``, ``"batch"`` or ``"none"``.
        eps: added to the std before dividing.

    Returns:
        ``[B, G, K]`` advantages.

    Raises:
        ValueError: on an unknown option, a wrong shape, or a NaN/infinite reward.

    Examples:
        >>> r = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
        >>> group_relative(r, eps=0.0).tolist()
        [[[1.0, 1.0], [-1.0, -1.0]]]
        >>> group_relative(r, scale="none").tolist()
        [[[0.5, 0.5], [-0.5, -0.5]]]
    """
    check_choice("baseline", baseline, BASELINES)
    check_choice("scale", scale, SCALES)
    _check_shape(rewards)
    check_finite(rewards)
    centred = rewards - rewards.mean(dim=_dims(baseline), keepdim=True)
    if scale == "none":
        return centred
    std = centred.square().mean(dim=_dims(scale), keepdim=True).sqrt()
    return centred / (std + eps)


def rloo(rewards: Tensor, baseline: str = "position") -> Tensor:
    """REINFORCE leave-one-out advantages: ``A_i = r_i - mean of the other G - 1 rollouts``.

    ``position``: ``A_{i,k} = r_{i,k} - mean_{g != i} r_{g,k}``; ``group``: the baseline is the mean
    of all K item rewards of the other G - 1 rollouts of the task. No scaling. With ``G = 1`` there
    is no other rollout to compare with and the advantages are 0 (as with ``group_relative``).

    Args:
        rewards: ``[B, G, K]`` item rewards.
        baseline: ``"position"`` or ``"group"``.

    Returns:
        ``[B, G, K]`` advantages.

    Raises:
        ValueError: on an unknown option, a wrong shape, or a NaN/infinite reward.

    Examples:
        >>> rloo(torch.tensor([[[3.0], [0.0], [0.0]]])).flatten().tolist()
        [3.0, -1.5, -1.5]
    """
    check_choice("baseline", baseline, BASELINES)
    _check_shape(rewards)
    check_finite(rewards)
    g = rewards.shape[1]
    if g < 2:
        return torch.zeros_like(rewards)
    if baseline == "position":
        others = (rewards.sum(1, keepdim=True) - rewards) / (g - 1)
    else:
        per_rollout = rewards.sum(2, keepdim=True)
        others = (per_rollout.sum(1, keepdim=True) - per_rollout) / ((g - 1) * rewards.shape[2])
    return rewards - others


def uncertainty_weights(
    weights: Tensor,
    variance: Tensor,
    eps: float = 1e-2,
    normalize: str = "batch",
    level: str = "rollout",
) -> Tensor:
    """FlexRec's uncertainty scaling ``c = 1 / (u + eps)`` of advantages.

    ``level="rollout"``: ``u_i = sum_k w_k^2 sigma_k^2``, the variance of the rollout's NDCG under
    independent gain noise, and ``c_{i,k} = c_i`` for every rank. ``level="item"`` (beyond the
    paper): ``c_{i,k} = 1 / (w_k^2 sigma_k^2 + eps)``. ``normalize`` rescales ``c`` to mean 1 over
    the batch (``batch``), over each task's G rollouts (``group``; G x K items at item level), or
    leaves it (``none``). Conventions: ``eps`` (a noise floor in NDCG^2 units), the normalisation
    and the level. With all-zero variance, ``c`` is constant and normalises to exactly 1.

    Args:
        weights: ``[B, G, K]`` rank weights ``w_k = D(k)/IDCG``.
        variance: ``[B, G, K]`` gain variance of each placed item (``>= 0``).
        eps: ``eps > 0`` added to ``u``.
        normalize: ``"batch"``, ``"group"`` or ``"none"``.
        level: ``"rollout"`` or ``"item"``.

    Returns:
        ``[B, G, K]`` positive multipliers of the advantages.

    Raises:
        ValueError: on an unknown option, mismatched shapes, ``eps <= 0``, or a negative or
            NaN variance.

    Examples:
        >>> w = torch.ones(1, 2, 1, dtype=torch.float64)
        >>> var = torch.tensor([[[0.0], [0.02]]], dtype=torch.float64)
        >>> uncertainty_weights(w, var, eps=0.01).flatten().round(decimals=6).tolist()
        [1.5, 0.5]
    """
    check_choice("normalize", normalize, NORMALIZATIONS)
    check_choice("level", level, UNCERTAINTY_LEVELS)
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if weights.shape != variance.shape or weights.dim() != 3:
        raise ValueError(
            "weights and variance must both have shape [B, G, K], got "
            f"{tuple(weights.shape)} and {tuple(variance.shape)}"
        )
    check_finite(variance, "variances")
    if bool((variance < 0).any()):
        raise ValueError(f"variances must be >= 0, got minimum {variance.min().item():g}")
    item_u = weights.square() * variance
    u = item_u if level == "item" else item_u.sum(2, keepdim=True)
    c = 1.0 / (u + eps)
    if normalize != "none":
        dims = (0, 1, 2) if normalize == "batch" else (1, 2)
        c = c / c.mean(dim=dims, keepdim=True)
    return c.expand_as(weights)
