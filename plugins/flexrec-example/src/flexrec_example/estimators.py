"""``rloo_ua``: REINFORCE leave-one-out advantages with FlexRec's uncertainty scaling.

Examples:
    >>> from flexrec.types import RewardOutput
    >>> out = RewardOutput(
    ...     rewards=torch.tensor([[[3.0], [0.0], [0.0]]], dtype=torch.float64),
    ...     list_metric=torch.zeros(1, 3, dtype=torch.float64),
    ...     weights=torch.ones(1, 3, 1, dtype=torch.float64),
    ...     variance=torch.tensor([[[0.0], [0.02], [0.0]]], dtype=torch.float64),
    ... )
    >>> RLOOUncertainty(eps_u=0.01)(out).flatten().round(decimals=6).tolist()
    [3.857143, -0.642857, -1.928571]
"""

from __future__ import annotations

import torch
from torch import Tensor

from flexrec.estimators import functional as F
from flexrec.estimators.base import AdvantageEstimator
from flexrec.types import RewardOutput

__all__ = ["RLOOUncertainty"]


class RLOOUncertainty(AdvantageEstimator):
    """Uncertainty-scaled RLOO: ``A_{i,k} = clip(c_{i,k} (r_{i,k} - b_{i,k}), -m, m)``.

    ``b`` is the leave-one-out baseline of :func:`flexrec.estimators.functional.rloo` (the mean of
    the other ``G - 1`` rollouts at the same rank, or over all their ranks with
    ``baseline="group"``); ``c = 1 / (u + eps_u)`` is FlexRec's uncertainty weight
    (:func:`flexrec.estimators.functional.uncertainty_weights`) with ``u_i = sum_k w_k^2 sigma_k^2``
    the variance of rollout ``i``'s NDCG, normalised to mean 1 (``normalize``). Unlike ``ua_grpo``
    there is no std division, so the advantages keep the reward's units (NDCG) and a group whose
    rollouts all score alike gets small advantages. ``m = clip`` (None: no clipping) bounds what one
    over-confident critic estimate can do. Without variances (``reward.variance`` is None) ``c = 1``
    and, unclipped, this is exactly ``rloo``. With ``G = 1`` the advantages are 0.

    Shapes: ``reward.rewards``, ``reward.weights`` and ``reward.variance`` ``[B, G, K]`` in,
    advantages ``[B, G, K]`` out.

    Args:
        baseline: ``"position"`` or ``"group"``.
        eps_u: ``> 0`` added to ``u``.
        normalize: ``"batch"``, ``"group"`` or ``"none"``.
        level: ``"rollout"`` (paper) or ``"item"``.
        clip: ``m > 0`` or None.
    """

    name = "rloo_ua"

    def __init__(
        self,
        baseline: str = "position",
        eps_u: float = 1e-2,
        normalize: str = "batch",
        level: str = "rollout",
        clip: float | None = None,
    ) -> None:
        super().__init__()
        F.check_choice("baseline", baseline, F.BASELINES)
        F.check_choice("normalize", normalize, F.NORMALIZATIONS)
        F.check_choice("level", level, F.UNCERTAINTY_LEVELS)
        if eps_u <= 0:
            raise ValueError(f"eps_u must be > 0, got {eps_u}")
        if clip is not None and clip <= 0:
            raise ValueError(f"clip must be > 0 or None, got {clip}")
        self.baseline = baseline
        self.eps_u = eps_u
        self.normalize = normalize
        self.level = level
        self.clip = clip

    def forward(self, reward: RewardOutput) -> Tensor:
        """Advantages ``[B, G, K]`` for ``reward.rewards`` ``[B, G, K]`` and ``reward.variance``."""
        advantages = F.rloo(reward.rewards, self.baseline)
        if reward.variance is not None:
            advantages = advantages * F.uncertainty_weights(
                reward.weights, reward.variance, self.eps_u, self.normalize, self.level
            )
        if self.clip is not None:
            advantages = torch.clamp(advantages, -self.clip, self.clip)
        return advantages
