"""The :class:`AdvantageEstimator` base class (the ``estimator`` registry)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from flexrec.errors import PluginError
from flexrec.types import RewardOutput

__all__ = ["AdvantageEstimator", "check_advantages"]


class AdvantageEstimator(nn.Module):
    """Maps item rewards ``[B, G, K]`` (with optional variances) to advantages ``[B, G, K]``.

    Subclasses set a unique ``name`` and implement :meth:`forward`. Estimators are ``nn.Module``
    so that learned baselines can hold parameters.
    """

    name: ClassVar[str]

    def forward(self, reward: RewardOutput) -> Tensor:
        """Advantages ``[B, G, K]`` for ``reward.rewards`` ``[B, G, K]``."""
        raise NotImplementedError


def check_advantages(estimator: nn.Module, advantages: Any, reward: RewardOutput) -> None:
    """Refuse advantages that training cannot use, naming the estimator: not a tensor of the
    rewards' shape ``[B, G, K]``, or not finite (the rewards were). :class:`~flexrec.module.FlexRecModule`
    runs it after every call of its estimator (a shape check and one ``isfinite`` per batch).

    Raises:
        PluginError: e.g. ``estimator 'x' returned advantages of shape (4, 8), expected
            (4, 8, 6) ([B, G, K], like the rewards)``.

    Examples:
        >>> rewards = torch.zeros(1, 2, 3)
        >>> out = RewardOutput(rewards, torch.zeros(1, 2), torch.zeros(1, 2, 3))
        >>> check_advantages(AdvantageEstimator(), rewards.mean(-1), out)
        Traceback (most recent call last):
        ...
        flexrec.errors.PluginError: estimator 'AdvantageEstimator' returned advantages of shape (1, 2), expected (1, 2, 3) ([B, G, K], like the rewards)
    """
    name = getattr(estimator, "name", type(estimator).__name__)
    want = tuple(reward.rewards.shape)
    found = tuple(advantages.shape) if isinstance(advantages, Tensor) else type(advantages).__name__
    if found != want:
        raise PluginError(
            f"estimator {name!r} returned advantages of shape {found}, expected {want} "
            "([B, G, K], like the rewards)"
        )
    bad = ~torch.isfinite(advantages)
    if bool(bad.any()):
        index = tuple(int(i) for i in bad.nonzero()[0])
        raise PluginError(
            f"estimator {name!r} returned a non-finite advantage ({advantages[index].item():g} at "
            f"task {index[0]}, rollout {index[1]}, rank {index[2]}) for finite rewards"
        )
