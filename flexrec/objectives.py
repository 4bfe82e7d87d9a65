"""The item-level clipped policy objective with exact per-step KL and entropy.

Per-step distributions are given as log-probabilities over the ``K`` candidates,
``step_logprobs[b, g, k, c] = log pi(c | x, a_<k)``, with ``-inf`` for candidates already placed.
Because the support is at most ``K``, KL(pi_theta || pi_ref) and the entropy are computed exactly
(no sampled estimator, *convention*). Candidates that are ``-inf`` under pi_theta contribute 0,
with finite gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flexrec.types import LossOutput

__all__ = ["masked_mean", "policy_loss", "step_entropy", "step_kl"]


def _finite_logp(logp: Tensor, support: Tensor) -> Tensor:
    """``logp`` with entries outside ``support`` replaced by 0 (so products stay NaN-free)."""
    return torch.where(support, logp, torch.zeros_like(logp))


def step_kl(new_logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Exact ``KL(pi_theta || pi_ref) = sum_c p_theta(c) (log p_theta(c) - log p_ref(c))``.

    Entries that are ``-inf`` under pi_theta (e.g. already placed candidates, ``-inf`` in both)
    contribute exactly 0 to the value and the gradient. A candidate with mass under pi_theta but
    ``-inf`` under pi_ref gives ``+inf`` (the true KL); the two policies should share a support.

    Args:
        new_logprobs: ``[..., C]`` log-probabilities of pi_theta (normalised over the finite entries).
        ref_logprobs: ``[..., C]`` log-probabilities of pi_ref.

    Returns:
        ``[...]`` KL per step, ``>= 0``.

    Examples:
        >>> new = torch.tensor([[0.5, 0.5, 0.0]]).log()
        >>> ref = torch.tensor([[0.25, 0.75, 0.0]]).log()
        >>> round(step_kl(new, ref).item(), 6)
        0.143841
    """
    support = new_logprobs > -torch.inf
    p = new_logprobs.exp()
    diff = _finite_logp(new_logprobs, support) - _finite_logp(ref_logprobs, support)
    return (p * diff).sum(-1)


def step_entropy(logprobs: Tensor) -> Tensor:
    """Exact entropy ``-sum_c p(c) log p(c)`` of per-step distributions (``-inf`` entries give 0).

    Args:
        logprobs: ``[..., C]`` log-probabilities (normalised over the finite entries).

    Returns:
        ``[...]`` entropy per step.

    Examples:
        >>> round(step_entropy(torch.tensor([0.5, 0.5, 0.0]).log()).item(), 6)
        0.693147
    """
    support = logprobs > -torch.inf
    return -(logprobs.exp() * _finite_logp(logprobs, support)).sum(-1)


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values`` over the entries where ``mask`` is true (all entries if None; 0 if none).

    Args:
        values: ``[B, G, K]`` per-item values.
        mask: ``[B, G, K]`` bool/float mask or None.

    Returns:
        Scalar tensor.

    Examples:
        >>> masked_mean(torch.tensor([1.0, 2.0, 9.0]), torch.tensor([True, True, False])).item()
        1.5
    """
    if mask is None:
        return values.mean()
    weights = mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


def policy_loss(
    new_logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    new_step_logprobs: Tensor | None = None,
    ref_step_logprobs: Tensor | None = None,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    beta: float = 0.01,
    eta: float = 0.005,
    mask: Tensor | None = None,
) -> LossOutput:
    """Item-level clipped surrogate with exact KL and entropy terms.

    ``L = -mean[min(rho A, clip(rho, 1 - clip_low, 1 + clip_high) A)] + beta mean KL - eta mean H``
    with ``rho = exp(new_logprobs - old_logprobs)``; every mean is over the placed items selected by
    ``mask`` (all ``B x G x K`` items by default; pass a mask to skip, e.g., the last forced step).
    The KL term is 0 when either step tensor is None, the entropy term when ``new_step_logprobs``
    is None. ``clip_fraction`` is the share of items where clipping is active (the clipped term is
    the one selected by ``min`` and differs from the unclipped one, so the item has no gradient).

    Args:
        new_logprobs: ``[B, G, K]`` log pi_theta(a_k | x, a_<k) (with gradient).
        old_logprobs: ``[B, G, K]`` log-probabilities under the sampling policy (detached).
        advantages: ``[B, G, K]`` item advantages.
        new_step_logprobs: ``[B, G, K, K]`` pi_theta's per-step log-probabilities or None.
        ref_step_logprobs: ``[B, G, K, K]`` pi_ref's per-step log-probabilities or None.
        clip_low: ``eps_low``; the ratio's lower bound is ``1 - clip_low``.
        clip_high: ``eps_high``; the ratio's upper bound is ``1 + clip_high``.
        beta: KL coefficient (paper: 0.01).
        eta: entropy bonus coefficient (paper: 0.005).
        mask: ``[B, G, K]`` bool mask of the items to average over, or None for all.

    Returns:
        :class:`~flexrec.types.LossOutput` of scalars.
    """
    old_logprobs = old_logprobs.detach()
    advantages = advantages.detach()
    ratio = torch.exp(new_logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * advantages
    surrogate = torch.minimum(unclipped, clipped)
    pg = -masked_mean(surrogate, mask)
    clip_fraction = masked_mean((clipped < unclipped).to(surrogate.dtype), mask).detach()
    zero = pg.new_zeros(())
    kl = zero
    entropy = zero
    if new_step_logprobs is not None:
        entropy = masked_mean(step_entropy(new_step_logprobs), mask)
        if ref_step_logprobs is not None:
            kl = masked_mean(step_kl(new_step_logprobs, ref_step_logprobs.detach()), mask)
    loss = pg + beta * kl - eta * entropy
    return LossOutput(
        loss=loss, policy_loss=pg, kl=kl, entropy=entropy, clip_fraction=clip_fraction
    )
