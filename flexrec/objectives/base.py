"""The :class:`Objective` interface (the ``objective`` registry): what a training step minimises.

An objective splits a training step in two:

1. :meth:`Objective.targets`, without gradient: from the batch and its gains, the permutations
   ``[B, G, K]`` the policy is trained on (sampled rollouts for RL, the gain-sorted ranking for
   supervised learning) and the per-task tensors the loss needs (old log-probabilities,
   advantages, reference log-probabilities, masks), as :class:`Targets`.
2. :meth:`Objective.loss`, with gradient: from the policy's teacher-forced log-probabilities of
   those permutations, on any subset of the tasks, the loss to minimise and the values to log,
   as :class:`ObjectiveLoss`.

:class:`~flexrec.module.FlexRecModule` only wires the two: ``targets`` once per batch, then for
every minibatch (and micro-batch) ``policy.log_probs`` of the selected targets, ``loss`` and a
backward pass. Losses are means over *units* (items, tasks, ...); :meth:`Objective.normalizer`
counts the units of a set of tasks from the targets alone, so that the module can split a
minibatch into micro-batches whose losses, each divided by the minibatch's count, add up exactly
to the minibatch's loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from flexrec.types import RankingBatch, Rollout

if TYPE_CHECKING:
    from flexrec.estimators.base import AdvantageEstimator
    from flexrec.policies.base import Policy
    from flexrec.rewards.base import Reward

__all__ = ["Objective", "ObjectiveLoss", "Targets"]


@dataclass
class Targets:
    """What one training step trains on: permutations to score and what their loss needs.

    Attributes:
        permutations: ``[B, G, K]`` long, candidate indices in placed order (``G`` targets per
            task: ``G`` rollouts for RL, 1 for a supervised target).
        rollout: the :class:`~flexrec.types.Rollout` the permutations were sampled as (passed to
            :meth:`~flexrec.policies.base.Policy.log_probs`, which may need more than the
            permutations, e.g. reasoning tokens), or None for permutations that were not sampled.
        tensors: per-task tensors the loss reads, each with leading dimension ``B`` (e.g.
            ``old_logprobs [B, G, K]``, ``advantages [B, G, K]``, ``ref_step_logprobs
            [B, G, K, K]``, ``mask [B, G, K]``); :meth:`select` picks their rows.
        logs: scalars logged once per training step as ``train/<key>`` (e.g. the mean reward).
        prog_bar: keys (of ``logs`` or of :attr:`ObjectiveLoss.logs`, or ``loss``) also shown in
            the progress bar.
    """

    permutations: Tensor
    rollout: Rollout | None = None
    tensors: dict[str, Tensor] = field(default_factory=dict)
    logs: dict[str, Tensor] = field(default_factory=dict)
    prog_bar: tuple[str, ...] = ()

    @property
    def batch_size(self) -> int:
        """``B``."""
        return int(self.permutations.shape[0])

    @property
    def group_size(self) -> int:
        """``G``."""
        return int(self.permutations.shape[1])

    def select(self, index: Tensor | list[int]) -> Targets:
        """The targets of the tasks at ``index`` (``logs`` and ``prog_bar`` are kept as they are).

        Examples:
            >>> targets = Targets(torch.tensor([[[0, 1]], [[1, 0]]]), tensors={"w": torch.ones(2, 1, 2)})
            >>> sub = targets.select([1])
            >>> sub.permutations.tolist(), sub.tensors["w"].shape
            ([[[1, 0]]], torch.Size([1, 1, 2]))
        """
        rows = torch.as_tensor(index, dtype=torch.long, device=self.permutations.device)
        return Targets(
            permutations=self.permutations[rows],
            rollout=None if self.rollout is None else self.rollout.select(index),
            tensors={key: value[rows.to(value.device)] for key, value in self.tensors.items()},
            logs=self.logs,
            prog_bar=self.prog_bar,
        )


@dataclass
class ObjectiveLoss:
    """The loss of some tasks' targets and the values to log (scalars).

    Both are shares of the mean over a set of units (items, tasks, ...) that may be larger than
    these tasks (see :meth:`Objective.loss`), so the outputs of a partition of a minibatch add up
    to the minibatch's.

    Attributes:
        loss: the loss to minimise, with gradient; logged as ``train/loss``.
        logs: detached scalars logged as ``train/<key>`` (e.g. ``kl``, ``entropy``).
    """

    loss: Tensor
    logs: dict[str, Tensor] = field(default_factory=dict)


class Objective(nn.Module):
    """Base class of training objectives (registered through ``flexrec_register_objectives``).

    Subclasses set a unique ``name`` and implement :meth:`targets`, :meth:`normalizer` and
    :meth:`loss`. Objectives are ``nn.Module`` so that they may hold buffers or parameters (the
    optimiser trains only the policy's). Constructors may accept the context keyword arguments
    ``clip_low``, ``clip_high``, ``kl_coef`` and ``entropy_coef``: the module passes its own
    arguments of those names to constructors that accept them, unless the objective's ``args``
    set them.
    """

    name: ClassVar[str]

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
        """The targets of a training step (called under ``torch.no_grad``, after the module has
        seeded the global torch RNG from the run's seed and the step: draw randomness from it).

        Args:
            batch: ``B`` tasks with ``K`` candidates.
            gains: ``[B, K]`` gain per candidate (candidate order), observed or filled by the
                feedback model.
            variance: ``[B, K]`` gain variance per candidate, or None when every gain is exact.
            policy: the policy being trained (to sample rollouts or reference log-probs).
            reward: the configured item-level reward (objectives that do not score rollouts
                ignore it, as they may ignore ``estimator``, ``group_size`` and ``temperature``).
            estimator: the configured advantage estimator.
            group_size: ``G``, rollouts per task.
            temperature: sampling temperature of the rollouts.

        Returns:
            :class:`Targets` with ``permutations [B, G, K]``.
        """
        raise NotImplementedError

    def normalizer(self, targets: Targets) -> Tensor:
        """The number of units the loss of these targets averages over (a scalar ``>= 1``).

        It must depend on the targets only (never on log-probabilities), so that the module
        can count a minibatch's units before it computes any micro-batch's loss.

        Args:
            targets: the targets of some tasks.

        Returns:
            Scalar tensor.
        """
        raise NotImplementedError

    def loss(
        self,
        logprobs: Tensor,
        step_logprobs: Tensor,
        targets: Targets,
        normalizer: Tensor | None = None,
    ) -> ObjectiveLoss:
        """The loss of ``b`` tasks' targets, given the policy's log-probabilities of them.

        With ``normalizer`` None the loss is the mean over these tasks' units. With a
        ``normalizer`` (the :meth:`normalizer` of a larger set of tasks, e.g. the minibatch these
        tasks are a micro-batch of) it is these tasks' share of that set's mean, and so are the
        logged values: the outputs of a partition of the set add up to the set's own outputs.

        Args:
            logprobs: ``[b, G, K]`` ``log pi(a_k | x, a_<k)`` of ``targets.permutations``, with
                gradient.
            step_logprobs: ``[b, G, K, K]`` the policy's per-step log-probabilities over the
                candidates (``-inf`` for placed ones), with gradient.
            targets: the targets of the same ``b`` tasks (:meth:`Targets.select`).
            normalizer: scalar, or None for these targets' own :meth:`normalizer`.

        Returns:
            :class:`ObjectiveLoss`.
        """
        raise NotImplementedError
