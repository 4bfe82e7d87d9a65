"""Pure loss functions of the training objectives: the clipped RL loss and listwise ListMLE.

**Clipped item-level policy objective** (:func:`policy_loss`, METHOD.md §6). Per-step distributions are given as log-probabilities over the ``K`` candidates,
``step_logprobs[b, g, k, c] = log pi(c | x, a_<k)``, with ``-inf`` for candidates already placed.
Because the support is at most ``K``, KL(pi_theta || pi_ref) and the entropy are computed exactly
(no sampled estimator, *convention*). Candidates that are ``-inf`` under pi_theta contribute 0,
with finite gradients.

**ListMLE** (:func:`listmle_loss`): the Plackett–Luce negative log-likelihood of a target
permutation under the policy's own autoregressive factorisation,
``-sum_k log pi(a_k | x, a_<k)``, over the positions a mask selects. The target is the need's
gain-sorted permutation (:func:`gain_sorted_permutations`, ties broken at random) and the mask
keeps the positions up to the last positive gain (:func:`positive_prefix_mask`).
:func:`plackett_luce_logprobs` gives the per-position log-probabilities of a score-based
Plackett–Luce model, the classic ListMLE of Xia et al. (2008).

Every loss can be split over micro-batches: given the ``normalizer`` of the whole minibatch (the
number of units its mean is over), the losses of the parts sum to the loss of the whole, value
and gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flexrec.types import LossOutput

__all__ = [
    "gain_sorted_permutations",
    "listmle_loss",
    "masked_mean",
    "plackett_luce_logprobs",
    "policy_loss",
    "positive_prefix_mask",
    "step_entropy",
    "step_kl",
]


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


def masked_mean(values: Tensor, mask: Tensor | None, normalizer: Tensor | None = None) -> Tensor:
    """Mean of ``values`` over the entries where ``mask`` is true (all entries if None; 0 if none).

    With a ``normalizer`` the masked sum is divided by it instead of by the number of selected
    entries: the share of these entries in the mean over a larger set that has ``normalizer``
    selected entries (a micro-batch's share of its minibatch's mean).

    Args:
        values: ``[B, G, K]`` per-item values.
        mask: ``[B, G, K]`` bool/float mask or None.
        normalizer: scalar, the number of entries of the full mean, or None for this set's own.

    Returns:
        Scalar tensor.

    Examples:
        >>> masked_mean(torch.tensor([1.0, 2.0, 9.0]), torch.tensor([True, True, False])).item()
        1.5
        >>> masked_mean(torch.tensor([1.0, 2.0]), None, torch.tensor(4.0)).item()
        0.75
    """
    if normalizer is not None:
        if mask is None:
            return values.sum() / normalizer
        return (values * mask.to(values.dtype)).sum() / normalizer
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
    normalizer: Tensor | None = None,
) -> LossOutput:
    """Item-level clipped surrogate with exact KL and entropy terms.

    ``L = -mean[min(rho A, clip(rho, 1 - clip_low, 1 + clip_high) A)] + beta mean KL - eta mean H``
    with ``rho = exp(new_logprobs - old_logprobs)``; every mean is over the placed items selected by
    ``mask`` (all ``B x G x K`` items by default; pass a mask to skip, e.g., the last forced step).
    With a ``normalizer`` every mean is the masked sum divided by it (see :func:`masked_mean`), so
    the outputs of a partition of a minibatch's tasks, each given the minibatch's number of
    selected items, sum to the minibatch's outputs.
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
        normalizer: scalar number of items of the full mean, or None for these items' own.

    Returns:
        :class:`~flexrec.types.LossOutput` of scalars.

    Examples:
        Ratios 1.5, 0.5 and 1 with advantages 1, -1 and 1: the first two are clipped, to 1.2 and
        0.8, so ``L = -(1.2 - 0.8 + 1) / 3``.

        >>> new = torch.tensor([[[1.5, 0.5, 1.0]]]).log()
        >>> out = policy_loss(new, torch.zeros(1, 1, 3), torch.tensor([[[1.0, -1.0, 1.0]]]))
        >>> round(out.loss.item(), 4), round(out.clip_fraction.item(), 4)
        (-0.4667, 0.6667)
    """
    old_logprobs = old_logprobs.detach()
    advantages = advantages.detach()
    ratio = torch.exp(new_logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * advantages
    surrogate = torch.minimum(unclipped, clipped)
    pg = -masked_mean(surrogate, mask, normalizer)
    clip_fraction = masked_mean(
        (clipped < unclipped).to(surrogate.dtype), mask, normalizer
    ).detach()
    zero = pg.new_zeros(())
    kl = zero
    entropy = zero
    if new_step_logprobs is not None:
        entropy = masked_mean(step_entropy(new_step_logprobs), mask, normalizer)
        if ref_step_logprobs is not None:
            kl = masked_mean(
                step_kl(new_step_logprobs, ref_step_logprobs.detach()), mask, normalizer
            )
    loss = pg + beta * kl - eta * entropy
    return LossOutput(
        loss=loss, policy_loss=pg, kl=kl, entropy=entropy, clip_fraction=clip_fraction
    )


def gain_sorted_permutations(gains: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The permutations that sort each task's candidates by gain, descending, ties at random.

    Equal gains are ordered uniformly at random (random keys from ``generator``, or the global
    torch RNG when None): a fixed tie order, such as by candidate index, would teach the policy
    the order candidates happen to be listed in, which carries no information. Zero-gain tails
    are ties too, so they come out shuffled.

    Args:
        gains: ``[B, K]`` gain per candidate (candidate order).
        generator: the random source of the tie-breaking keys (on ``gains.device``) or None.

    Returns:
        ``[B, K]`` long candidate indices in placed order (highest gain first).

    Examples:
        >>> gains = torch.tensor([[0.0, 2.0, 1.0, 0.5]])
        >>> gain_sorted_permutations(gains).tolist()
        [[1, 2, 3, 0]]
        >>> tied = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
        >>> gain_sorted_permutations(tied, torch.Generator().manual_seed(0))[0, :2].sort().values.tolist()
        [0, 2]
    """
    keys = torch.rand(gains.shape, generator=generator, device=gains.device)
    shuffle = keys.argsort(-1)
    order = torch.sort(gains.gather(-1, shuffle), dim=-1, descending=True, stable=True).indices
    return shuffle.gather(-1, order)


def positive_prefix_mask(placed_gains: Tensor, truncate: bool = True) -> Tensor:
    """Which positions of gain-sorted lists a listwise likelihood includes.

    With ``truncate`` the positions up to the last positive gain (the "top-k" Plackett–Luce
    likelihood: the positives in their order, placed before every zero-gain candidate, whose
    own order is arbitrary); a list without positive gain has none. Without, every position.

    Args:
        placed_gains: ``[..., K]`` gains in placed order, sorted descending.
        truncate: stop after the last positive gain.

    Returns:
        ``[..., K]`` bool.

    Examples:
        >>> positive_prefix_mask(torch.tensor([[2.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])).tolist()
        [[True, True, False, False], [False, False, False, False]]
        >>> positive_prefix_mask(torch.tensor([2.0, 0.0]), truncate=False).tolist()
        [True, True]
    """
    if not truncate:
        return torch.ones_like(placed_gains, dtype=torch.bool)
    positives = (placed_gains > 0).sum(-1, keepdim=True)
    return torch.arange(placed_gains.shape[-1], device=placed_gains.device) < positives


def plackett_luce_logprobs(scores: Tensor, permutations: Tensor) -> Tensor:
    """Per-position log-probabilities of permutations under a Plackett–Luce model of scores.

    ``log pi(a_k | a_<k) = s(a_k) - logsumexp_{c not in a_<k} s(c)``: the softmax over the
    candidates not yet placed, the factorisation every flexrec policy uses (with scores that
    may depend on ``a_<k``). Their negated sum is Xia et al.'s ListMLE loss.

    Args:
        scores: ``[..., K]`` scores per candidate (candidate order).
        permutations: ``[..., K]`` candidate indices in placed order.

    Returns:
        ``[..., K]`` log-probabilities in placed order (the last one is 0).

    Examples:
        >>> lp = plackett_luce_logprobs(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([2, 1, 0]))
        >>> [round(v, 4) for v in lp.tolist()]
        [-0.4076, -0.3133, 0.0]
    """
    placed = scores.gather(-1, permutations)
    # logsumexp over the suffix placed[k:] = the candidates still available at step k
    suffix = torch.logcumsumexp(placed.flip(-1), dim=-1).flip(-1)
    return placed - suffix


def listmle_loss(
    logprobs: Tensor, mask: Tensor | None = None, normalizer: Tensor | None = None
) -> Tensor:
    """ListMLE: the negative log-likelihood of target permutations, averaged over positions.

    ``L = -sum_{b,g,k} mask * log pi(a_k | x, a_<k) / normalizer``; by default the normaliser is
    the number of selected positions (a mean per placed item, as :func:`policy_loss`), so a
    minibatch split into parts, each given the minibatch's normaliser, sums to the same loss.

    Args:
        logprobs: ``[B, G, K]`` log-probabilities of the target's placed items (with gradient).
        mask: ``[B, G, K]`` bool, the positions included (None: all).
        normalizer: scalar, or None for the number of included positions (at least 1).

    Returns:
        Scalar loss.

    Examples:
        >>> lp = torch.tensor([[[-1.0, -0.5, 0.0]]])
        >>> listmle_loss(lp).item()
        0.5
        >>> listmle_loss(lp, torch.tensor([[[True, True, False]]])).item()
        0.75
    """
    if mask is None:
        mask = torch.ones_like(logprobs, dtype=torch.bool)
    if normalizer is None:
        normalizer = mask.sum().clamp(min=1)
    picked = torch.where(mask, logprobs, torch.zeros_like(logprobs))
    return -picked.sum() / normalizer
