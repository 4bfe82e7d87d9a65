"""The :class:`Policy` interface (the ``policy`` registry) and the math shared by every policy.

A policy ranks a task's ``K`` candidates one position at a time: at step ``k`` it scores the
candidates, masks those already placed and renormalises (constrained decoding, *convention*), so
every sampled permutation is valid by construction and every placed item has its own log-probability.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from flexrec.types import RankingBatch, Rollout

__all__ = [
    "Policy",
    "choose",
    "masked_log_softmax",
    "placed_before",
    "placed_order_logprobs",
]


def masked_log_softmax(scores: Tensor, placed: Tensor) -> Tensor:
    """Log-softmax over the candidates not yet placed; ``-inf`` for placed ones.

    Args:
        scores: ``[..., K]`` unnormalised scores over candidates.
        placed: ``[..., K]`` bool, True where the candidate is already placed.

    Returns:
        ``[..., K]`` log-probabilities summing (in probability) to 1 over the remaining candidates.

    Examples:
        >>> logp = masked_log_softmax(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([False, True, False]))
        >>> [round(v, 4) for v in logp.exp().tolist()]
        [0.1192, 0.0, 0.8808]
    """
    return torch.log_softmax(scores.masked_fill(placed, -torch.inf), dim=-1)


def placed_before(permutations: Tensor) -> Tensor:
    """For every step, which candidates were placed at earlier steps.

    Args:
        permutations: ``[..., K]`` candidate indices in placed order.

    Returns:
        ``[..., K, K]`` bool; ``out[..., k, c]`` is True when candidate ``c`` is among ``a_<k``.

    Examples:
        >>> placed_before(torch.tensor([2, 0, 1])).int().tolist()
        [[0, 0, 0], [0, 0, 1], [1, 0, 1]]
    """
    k = permutations.shape[-1]
    onehot = torch.nn.functional.one_hot(permutations, k)
    return (onehot.cumsum(-2) - onehot).bool()


def placed_order_logprobs(step_logprobs: Tensor, permutations: Tensor) -> Tensor:
    """The log-probability of the placed item at each step.

    Args:
        step_logprobs: ``[..., K, K]`` per-step log-probabilities over candidates.
        permutations: ``[..., K]`` candidate indices in placed order.

    Returns:
        ``[..., K]`` ``log pi(a_k | x, a_<k)``.
    """
    return step_logprobs.gather(-1, permutations.unsqueeze(-1)).squeeze(-1)


def choose(
    logprobs: Tensor, temperature: float, generator: torch.Generator | None = None
) -> Tensor:
    """Draw one candidate per row, or the argmax when ``temperature == 0``.

    Args:
        logprobs: ``[N, K]`` masked log-probabilities (``-inf`` entries are never chosen).
        temperature: sampling temperature; ``0`` means greedy.
        generator: optional random generator.

    Returns:
        ``[N]`` long candidate indices.
    """
    if temperature <= 0:
        return logprobs.argmax(-1)
    probs = torch.softmax(logprobs / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class Policy(nn.Module):
    """Base class of ranking policies (registered through ``flexrec_register_policies``).

    Subclasses set a unique ``name`` and implement :meth:`sample` and :meth:`log_probs`;
    :meth:`rank` and :meth:`reference_log_probs` have generic implementations that subclasses may
    override, and :meth:`prepare` is an optional hook (default no-op) to fit on the data module.
    Constructors may accept the context keyword arguments ``num_items``, ``num_features`` and
    ``num_needs``; the trainer passes dataset information for those that a constructor accepts.

    ``Rollout.logprobs`` are the log-probabilities of the policy at temperature 1 (a temperature only
    changes which items are drawn), so they equal :meth:`log_probs` of the same permutations.
    """

    name: ClassVar[str]

    def sample(self, batch: RankingBatch, group_size: int, temperature: float = 1.0) -> Rollout:
        """Sample ``G`` rankings per task (no gradients).

        Args:
            batch: ``B`` tasks with ``K`` candidates.
            group_size: ``G``.
            temperature: sampling temperature (``0`` = greedy).

        Returns:
            :class:`Rollout` with ``permutations [B, G, K]``, ``logprobs [B, G, K]`` and
            ``step_logprobs [B, G, K, K]`` (``-inf`` for already placed candidates).
        """
        raise NotImplementedError

    def log_probs(self, batch: RankingBatch, permutations: Tensor) -> tuple[Tensor, Tensor]:
        """Recompute log-probabilities of given rankings, with gradients.

        Args:
            batch: ``B`` tasks.
            permutations: ``[B, G, K]`` candidate indices in placed order.

        Returns:
            ``(logprobs [B, G, K], step_logprobs [B, G, K, K])``.
        """
        raise NotImplementedError

    def prepare(self, datamodule: Any) -> None:
        """Optional one-time preparation with the data module, before training or evaluation.

        :class:`~flexrec.module.FlexRecModule` calls it at the end of ``setup`` (once per trainer
        stage) with the trainer's data module, when the trainer has one. Policies that learn from
        data outside the RL loop (e.g. the traditional baselines of :mod:`flexrec.baselines`, which
        fit on ``datamodule.feedback_training_data()``) override it. An override must use only
        leak-free data (train users' interactions, features computed before each task's cut) and
        be idempotent (skip the work when already prepared), since ``setup`` runs for every stage.
        The default does nothing.

        Args:
            datamodule: the trainer's data module (e.g. a
                :class:`~flexrec.data.datamodule.FlexRecDataModule`).
        """
        return None

    @torch.no_grad()
    def rank(self, batch: RankingBatch) -> Tensor:
        """Greedy ranking ``[B, K]`` (candidate indices in placed order); deterministic."""
        return self.sample(batch, 1, temperature=0.0).permutations[:, 0]

    @torch.no_grad()
    def reference_log_probs(
        self, batch: RankingBatch, permutations: Tensor
    ) -> tuple[Tensor, Tensor]:
        """:meth:`log_probs` under the reference policy pi_ref (no gradients).

        Args:
            batch: ``B`` tasks.
            permutations: ``[B, G, K]``.

        Returns:
            ``(logprobs [B, G, K], step_logprobs [B, G, K, K])`` of pi_ref.
        """
        raise NotImplementedError

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimizer should update (the reference policy's are excluded)."""
        return [p for p in self.parameters() if p.requires_grad]

    def rebuilt_state_keys(self) -> list[str]:
        """State-dict keys (relative to the policy) that the constructor recreates exactly from
        the configuration, such as frozen pretrained weights, so that checkpoints may leave them
        out (the module checks a fingerprint of them on load). Default: none."""
        return []
