"""The :class:`AdvantageEstimator` base class (the ``estimator`` registry)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from flexrec.types import RewardOutput

__all__ = ["AdvantageEstimator"]


class AdvantageEstimator(nn.Module):
    """Maps item rewards ``[B, G, K]`` (with optional variances) to advantages ``[B, G, K]``.

    Subclasses set a unique ``name`` and implement :meth:`forward`. Estimators are ``nn.Module``
    so that learned baselines can hold parameters.
    """

    name: ClassVar[str]

    def forward(self, reward: RewardOutput) -> Tensor:
        """Advantages ``[B, G, K]`` for ``reward.rewards`` ``[B, G, K]``."""
        raise NotImplementedError
