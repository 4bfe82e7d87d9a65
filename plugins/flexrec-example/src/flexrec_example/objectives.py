"""``pairwise_logistic``: a stepwise RankNet objective for autoregressive ranking policies.

At every step ``k`` of the gain-sorted target ranking, each pair of candidates still available
whose gains differ gets the logistic (RankNet) loss of the policy's log-probabilities of the two:
``softplus(-sigma (log pi(i | x, a_<k) - log pi(j | x, a_<k)))`` for ``g_i > g_j``. Log-probability
differences are logit differences (the step's normaliser cancels), so this is RankNet on the
policy's own step scores, in every context the target ranking passes through.

Examples:
    Two candidates, the first better; at step 0 the policy gives them probabilities 0.25 and
    0.75, so the loss is ``log(1 + 0.75 / 0.25) = log 4``, over the one pair (step 1 has none):

    >>> import math
    >>> steps = torch.tensor([[[[0.25, 0.75], [0.0, 1.0]]]]).log()
    >>> perms, gains = torch.tensor([[[0, 1]]]), torch.tensor([[[1.0, 0.0]]])
    >>> round(pairwise_logistic_loss(steps, perms, gains).item(), 6), round(math.log(4), 6)
    (1.386294, 1.386294)
"""

from __future__ import annotations

import torch
from torch import Tensor

from flexrec.estimators.base import AdvantageEstimator
from flexrec.objectives.base import Objective, ObjectiveLoss, Targets
from flexrec.objectives.functional import gain_sorted_permutations
from flexrec.policies.base import Policy, placed_before
from flexrec.rewards.base import Reward
from flexrec.types import RankingBatch

__all__ = ["PairwiseLogistic", "pairwise_logistic_loss", "ranked_pairs"]


def ranked_pairs(permutations: Tensor, gains: Tensor) -> Tensor:
    """Which ordered pairs ``(i, j)`` with ``g_i > g_j`` are both still available at each step.

    Args:
        permutations: ``[B, G, K]`` target rankings (candidate indices in placed order).
        gains: ``[B, G, K]`` gain per candidate (candidate order).

    Returns:
        ``[B, G, K, K, K]`` bool: ``out[b, g, k, i, j]``.
    """
    available = ~placed_before(permutations)  # [B, G, K steps, K candidates]
    better = gains.unsqueeze(-1) > gains.unsqueeze(-2)  # [B, G, K, K]
    both = available.unsqueeze(-1) & available.unsqueeze(-2)
    return both & better.unsqueeze(2)


def pairwise_logistic_loss(
    step_logprobs: Tensor,
    permutations: Tensor,
    gains: Tensor,
    sigma: float = 1.0,
    normalizer: Tensor | None = None,
) -> Tensor:
    """The stepwise RankNet loss, summed over ranked pairs and divided by ``normalizer``.

    Args:
        step_logprobs: ``[B, G, K, K]`` the policy's per-step log-probabilities (``-inf`` for
            placed candidates), teacher-forced on ``permutations``.
        permutations: ``[B, G, K]`` target rankings.
        gains: ``[B, G, K]`` gain per candidate (candidate order).
        sigma: RankNet's scale of the log-probability difference.
        normalizer: scalar, or None for the number of ranked pairs (at least 1).

    Returns:
        Scalar loss.
    """
    pairs = ranked_pairs(permutations, gains)
    if normalizer is None:
        normalizer = pairs.sum().clamp(min=1)
    finite = torch.where(
        torch.isfinite(step_logprobs), step_logprobs, torch.zeros_like(step_logprobs)
    )
    diff = finite.unsqueeze(-1) - finite.unsqueeze(-2)  # [B, G, K, K, K]
    losses = torch.nn.functional.softplus(-sigma * diff)
    return torch.where(pairs, losses, torch.zeros_like(losses)).sum() / normalizer


class PairwiseLogistic(Objective):
    """Supervised stepwise RankNet on the gain-sorted ranking (``G = 1`` target per task).

    The target ranking is :func:`flexrec.objectives.functional.gain_sorted_permutations` (ties at
    random, from the step-seeded RNG); the loss is the mean of
    :func:`pairwise_logistic_loss` over every step's ranked pairs. Pairs of equal gain (the
    zero-gain tail among them) carry no preference and are left out. The reward, the estimator
    and the reference policy are not used. Logs ``pairs``: ranked pairs per task.

    Args:
        sigma: ``> 0``, scale of the log-probability difference.
    """

    name = "pairwise_logistic"

    def __init__(self, sigma: float = 1.0) -> None:
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.sigma = sigma

    def targets(
        self,
        batch: RankingBatch,
        gains: Tensor,
        variance: Tensor | None,
        *,
        policy: Policy,
        reward: Reward,
        estimator: AdvantageEstimator,
        group_size: int,
        temperature: float,
    ) -> Targets:
        """The gain-sorted rankings ``[B, 1, K]`` and the gains ``[B, 1, K]``."""
        permutations = gain_sorted_permutations(gains).unsqueeze(1)
        per_task = gains.unsqueeze(1)
        count = ranked_pairs(permutations, per_task).flatten(1).sum(-1)
        return Targets(
            permutations=permutations,
            tensors={"gains": per_task},
            logs={"pairs": count.to(gains.dtype).mean()},
            prog_bar=("loss",),
        )

    def normalizer(self, targets: Targets) -> Tensor:
        """The number of ranked pairs over every step (at least 1)."""
        pairs = ranked_pairs(targets.permutations, targets.tensors["gains"])
        return pairs.sum().clamp(min=1).to(torch.get_default_dtype())

    def loss(
        self,
        logprobs: Tensor,
        step_logprobs: Tensor,
        targets: Targets,
        normalizer: Tensor | None = None,
    ) -> ObjectiveLoss:
        """The stepwise RankNet loss (see the class docstring)."""
        if normalizer is None:
            normalizer = self.normalizer(targets)
        value = pairwise_logistic_loss(
            step_logprobs, targets.permutations, targets.tensors["gains"], self.sigma, normalizer
        )
        return ObjectiveLoss(value)
