"""Built-in advantage estimators (the ``estimator`` registry).

Each class configures the pure functions of :mod:`flexrec.estimators.functional`; see there for the
exact definition of the baseline/scale sets. Every estimator raises a one-line ``ValueError`` on a
NaN or infinite reward.
"""

from __future__ import annotations

from torch import Tensor

from flexrec.estimators import functional as F
from flexrec.estimators.base import AdvantageEstimator
from flexrec.plugin.spec import hookimpl
from flexrec.types import RewardOutput

__all__ = [
    "DrGRPOEstimator",
    "GRPOEstimator",
    "RLOOEstimator",
    "UAGRPOEstimator",
    "flexrec_register_advantage_estimators",
]


class GRPOEstimator(AdvantageEstimator):
    """Group-relative advantages ``A = (r - b) / (s + eps)``.

    ``b`` = mean over the task's G rollouts per rank (``baseline="position"``) or over all its
    G x K item rewards (``"group"``); ``s`` = population std of ``r - b`` over the task
    (``scale="group"``), per rank (``"position"``), over the batch (``"batch"``), or no division
    (``"none"``, Dr. GRPO). With the ``sequence`` reward this is exactly standard GRPO (with a
    population std). Conventions: the baseline set, the scale set, the population std, ``eps``.

    Args:
        baseline: ``"position"`` or ``"group"``.
        scale: ``"group"``, ``"position"``, ``"batch"`` or ``"none"``.
        eps: added to the std.
    """

    name = "grpo"

    def __init__(self, baseline: str = "position", scale: str = "group", eps: float = 1e-6) -> None:
        super().__init__()
        F.check_choice("baseline", baseline, F.BASELINES)
        F.check_choice("scale", scale, F.SCALES)
        self.baseline = baseline
        self.scale = scale
        self.eps = eps

    def forward(self, reward: RewardOutput) -> Tensor:
        """Advantages ``[B, G, K]`` for ``reward.rewards`` ``[B, G, K]``."""
        return F.group_relative(reward.rewards, self.baseline, self.scale, self.eps)


class DrGRPOEstimator(GRPOEstimator):
    """Dr. GRPO preset: ``grpo`` without the std division (``scale="none"``), ``A = r - b``.

    Args:
        baseline: ``"position"`` or ``"group"``.
        scale: defaults to ``"none"``; other values turn it back into ``grpo``.
        eps: unused with ``scale="none"``.
    """

    name = "dr_grpo"

    def __init__(self, baseline: str = "position", scale: str = "none", eps: float = 1e-6) -> None:
        super().__init__(baseline=baseline, scale=scale, eps=eps)


class RLOOEstimator(AdvantageEstimator):
    """REINFORCE leave-one-out: ``A_i = r_i - mean of the other G - 1 rollouts`` (no scaling).

    Args:
        baseline: ``"position"`` (per rank) or ``"group"`` (all K items of the other rollouts).
    """

    name = "rloo"

    def __init__(self, baseline: str = "position") -> None:
        super().__init__()
        F.check_choice("baseline", baseline, F.BASELINES)
        self.baseline = baseline

    def forward(self, reward: RewardOutput) -> Tensor:
        """Advantages ``[B, G, K]`` for ``reward.rewards`` ``[B, G, K]``."""
        return F.rloo(reward.rewards, self.baseline)


class UAGRPOEstimator(GRPOEstimator):
    """FlexRec's uncertainty-aware GRPO: ``grpo`` advantages scaled by ``c = 1 / (u + eps_u)``.

    ``u_i = sum_k w_k^2 sigma^2(a_k)`` (``w_k = D(k)/IDCG``) is the variance of the rollout's NDCG
    under independent gain noise (paper). Conventions: ``c`` normalised to mean 1 over the batch
    (``normalize``), ``eps_u``, and the per-item variant ``level="item"`` (beyond the paper). When
    ``reward.variance`` is None no scaling is applied; all-zero variance gives a constant ``c``
    that normalises to 1, i.e. exactly ``grpo`` (unless ``normalize="none"``).

    Args:
        baseline: ``"position"`` or ``"group"`` (as ``grpo``).
        scale: ``"group"``, ``"position"``, ``"batch"`` or ``"none"`` (as ``grpo``).
        eps: added to the std (as ``grpo``).
        eps_u: ``eps > 0`` added to ``u``.
        normalize: ``"batch"``, ``"group"`` or ``"none"``.
        level: ``"rollout"`` or ``"item"``.
    """

    name = "ua_grpo"

    def __init__(
        self,
        baseline: str = "position",
        scale: str = "group",
        eps: float = 1e-6,
        eps_u: float = 1e-2,
        normalize: str = "batch",
        level: str = "rollout",
    ) -> None:
        super().__init__(baseline=baseline, scale=scale, eps=eps)
        F.check_choice("normalize", normalize, F.NORMALIZATIONS)
        F.check_choice("level", level, F.UNCERTAINTY_LEVELS)
        if eps_u <= 0:
            raise ValueError(f"eps_u must be > 0, got {eps_u}")
        self.eps_u = eps_u
        self.normalize = normalize
        self.level = level

    def forward(self, reward: RewardOutput) -> Tensor:
        """Advantages ``[B, G, K]`` for ``reward.rewards`` ``[B, G, K]`` and ``reward.variance``."""
        advantages = super().forward(reward)
        if reward.variance is None:
            return advantages
        c = F.uncertainty_weights(
            reward.weights, reward.variance, self.eps_u, self.normalize, self.level
        )
        return c * advantages


@hookimpl
def flexrec_register_advantage_estimators() -> list[type[AdvantageEstimator]]:
    """The built-in advantage estimators."""
    return [GRPOEstimator, DrGRPOEstimator, RLOOEstimator, UAGRPOEstimator]
