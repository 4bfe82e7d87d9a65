"""The :class:`Reward` base class: configures and composes the pure functions in
:mod:`flexrec.rewards.functional`."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from flexrec.errors import PluginError
from flexrec.rewards import functional as F
from flexrec.types import RankingBatch, RewardOutput, Rollout, gather_placed

__all__ = ["Reward", "check_reward_output"]


class Reward(nn.Module):
    """Base class of item-level rewards (the ``reward`` registry).

    Subclasses set a unique ``name`` and implement :meth:`item_rewards`, a function of the gains in
    placed order. The base class gathers gains and variances into placed order and computes the
    list metric and the rank weights shared by every reward. A reward that needs more than the
    placed gains (e.g. the placed items' categories) declares a ``rollout`` keyword in
    :meth:`item_rewards` and receives the sampled permutations; two-argument implementations keep
    working unchanged.

    Attributes:
        name: the registered name (unique within the ``reward`` registry).
        list_metric_name: what :attr:`RewardOutput.list_metric` measures; training logs it as
            ``train/<list_metric_name>``. The base class computes NDCG at the cutoff (``"ndcg"``);
            a reward that computes another list metric (by overriding :meth:`forward`, e.g. ERR)
            names it here.

    Args:
        cutoff: NDCG cutoff ``c`` of the reward metric; ``None`` means the full list (``c = K``).
    """

    name: ClassVar[str]
    list_metric_name: ClassVar[str] = "ndcg"
    _rollout_keyword: ClassVar[bool]  # set per class by _wants_rollout

    def __init__(self, cutoff: int | None = None) -> None:
        super().__init__()
        if cutoff is not None and cutoff < 1:
            raise ValueError(f"cutoff must be >= 1 or None, got {cutoff}")
        self.cutoff = cutoff

    def item_rewards(self, placed_gains: Tensor, batch: RankingBatch | None = None) -> Tensor:
        """Rewards ``[B, G, K]`` from gains in placed order ``[B, G, K]``.

        An override may add a keyword ``rollout: Rollout | None = None`` to receive the
        permutations ``[B, G, K]`` that placed the gains (``None`` when called directly).
        """
        raise NotImplementedError

    @classmethod
    def _wants_rollout(cls) -> bool:
        wants = cls.__dict__.get("_rollout_keyword")
        if wants is None:
            wants = "rollout" in inspect.signature(cls.item_rewards).parameters
            cls._rollout_keyword = wants
        return wants

    def forward(
        self,
        gains: Tensor,
        rollout: Rollout,
        variance: Tensor | None = None,
        batch: RankingBatch | None = None,
    ) -> RewardOutput:
        """Score a rollout.

        Args:
            gains: ``[B, K]`` gain per candidate (candidate order), observed or critic-filled.
            rollout: the sampled permutations ``[B, G, K]``.
            variance: ``[B, K]`` gain variance per candidate (candidate order) or None.
            batch: the tasks, for rewards that need more than gains (e.g. item categories).

        Returns:
            :class:`RewardOutput` in placed order.
        """
        placed = gather_placed(gains, rollout.permutations)
        weights = F.rank_weights(placed, self.cutoff)
        extra = {"rollout": rollout} if self._wants_rollout() else {}
        return RewardOutput(
            rewards=self.item_rewards(placed, batch, **extra),
            list_metric=(placed * weights).sum(-1),
            weights=weights,
            variance=None if variance is None else gather_placed(variance, rollout.permutations),
        )


def check_reward_output(reward: nn.Module, output: Any, rollout: Rollout) -> None:
    """Refuse what a reward returned for ``rollout`` when training cannot use it, naming the
    reward: not a :class:`~flexrec.types.RewardOutput`, ``rewards`` or ``weights`` not shaped
    ``[B, G, K]`` like the rollout's permutations, ``list_metric`` not ``[B, G]``, or a reward
    that is not finite. :class:`~flexrec.module.FlexRecModule` runs it after every call of its
    reward (shape checks and one ``isfinite`` per batch).

    Raises:
        PluginError: e.g. ``reward 'x' returned rewards of shape (4, 6), expected (4, 8, 6)
            ([B, G, K]: one per placed item of the rollouts)``.

    Examples:
        >>> from flexrec.rewards.builtin import SwapReward
        >>> rollout = Rollout(torch.tensor([[[0, 1], [1, 0]]]), torch.zeros(1, 2, 2))
        >>> out = SwapReward()(torch.tensor([[1.0, 0.0]]), rollout)
        >>> check_reward_output(SwapReward(), out, rollout)  # fine
        >>> out.rewards = out.rewards[:, 0]
        >>> check_reward_output(SwapReward(), out, rollout)
        Traceback (most recent call last):
        ...
        flexrec.errors.PluginError: reward 'swap' returned rewards of shape (1, 2), expected (1, 2, 2) ([B, G, K]: one per placed item of the rollouts)
    """
    name = getattr(reward, "name", type(reward).__name__)
    if not isinstance(output, RewardOutput):
        raise PluginError(
            f"reward {name!r} returned {type(output).__name__}, expected a RewardOutput"
        )
    shape = tuple(rollout.permutations.shape)
    expected = (
        ("rewards", shape, "[B, G, K]: one per placed item of the rollouts"),
        ("weights", shape, "[B, G, K]: one per placed item of the rollouts"),
        ("list_metric", shape[:2], "[B, G]: one per rollout"),
    )
    for field, want, meaning in expected:
        value = getattr(output, field)
        found = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        if found != want:
            raise PluginError(
                f"reward {name!r} returned {field} of shape {found}, expected {want} ({meaning})"
            )
    bad = ~torch.isfinite(output.rewards)
    if bool(bad.any()):
        index = tuple(int(i) for i in bad.nonzero()[0])
        raise PluginError(
            f"reward {name!r} returned a non-finite reward ({output.rewards[index].item():g} "
            f"at task {index[0]}, rollout {index[1]}, rank {index[2]}), expected finite rewards "
            "for finite gains"
        )
