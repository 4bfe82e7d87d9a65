"""The :class:`Policy` interface (the ``policy`` registry) and the math shared by every policy.

A policy ranks a task's ``K`` candidates one position at a time: at step ``k`` it scores the
candidates, masks those already placed and renormalises (constrained decoding, *convention*), so
every sampled permutation is valid by construction and every placed item has its own log-probability.
:func:`decode_permutations` is that loop, shared by every built-in policy; a policy supplies only
the log-probabilities of one step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from flexrec.types import RankingBatch, Rollout

__all__ = [
    "Policy",
    "StepLogProbs",
    "at_least_float32",
    "choose",
    "decode_permutations",
    "masked_log_softmax",
    "placed_before",
    "placed_order_logprobs",
    "rollout_from_steps",
]

StepLogProbs = Callable[[int, Tensor | None, Tensor], Tensor]
"""``(step, previous, placed) -> logprobs``: one step of :func:`decode_permutations`."""


def at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32 when its dtype is narrower (bf16/fp16 models); float64 stays float64.

    Examples:
        >>> at_least_float32(torch.ones(1, dtype=torch.bfloat16)).dtype
        torch.float32
        >>> at_least_float32(torch.ones(1, dtype=torch.float64)).dtype
        torch.float64
    """
    return x.to(torch.promote_types(x.dtype, torch.float32))


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


def rollout_from_steps(
    permutations: Tensor, step_logprobs: Tensor, reasoning: list[list[list[int]]] | None = None
) -> Rollout:
    """The :class:`~flexrec.types.Rollout` of sampled permutations and their per-step log-probs.

    Args:
        permutations: ``[B, G, K]`` candidate indices in placed order.
        step_logprobs: ``[B, G, K, K]`` per-step log-probabilities over candidates.
        reasoning: the rollouts' reasoning tokens (see :attr:`Rollout.reasoning`), or None.

    Returns:
        The rollout, with ``logprobs [B, G, K]`` gathered from ``step_logprobs``.
    """
    logprobs = placed_order_logprobs(step_logprobs, permutations)
    return Rollout(permutations, logprobs, step_logprobs, reasoning)


def choose(logprobs: Tensor, temperature: float) -> Tensor:
    """Draw one candidate per row (global torch RNG), or the argmax when ``temperature == 0``.

    Args:
        logprobs: ``[N, K]`` masked log-probabilities (``-inf`` entries are never chosen).
        temperature: sampling temperature; ``0`` means greedy.

    Returns:
        ``[N]`` long candidate indices.
    """
    if temperature <= 0:
        return logprobs.argmax(-1)
    probs = torch.softmax(logprobs / temperature, dim=-1)
    return torch.multinomial(probs, 1).squeeze(-1)


def decode_permutations(
    step_logprobs: StepLogProbs,
    shape: tuple[int, ...],
    num_candidates: int,
    temperature: float,
    device: torch.device | str,
) -> tuple[Tensor, Tensor]:
    """The autoregressive constrained-decoding loop: place ``K`` candidates one step at a time.

    At step ``k``, ``step_logprobs(k, previous, placed)`` returns the masked log-probabilities
    ``[*shape, K]`` of the step (``-inf`` where ``placed``), given the candidates ``previous``
    ``[*shape]`` placed at step ``k - 1`` (None at step 0) and the placed mask ``placed
    [*shape, K]``; one candidate per row is then drawn by :func:`choose` (one
    ``torch.multinomial`` call per step over the ``prod(shape)`` rows, or the argmax). Callbacks
    that carry state across steps (a KV cache, a running sum) update it from ``previous``.

    Args:
        step_logprobs: the step callback (see above).
        shape: leading shape of the rows, e.g. ``(B, G)`` or ``(N,)``.
        num_candidates: ``K``.
        temperature: sampling temperature; ``0`` means greedy.
        device: device of the placed mask.

    Returns:
        ``(permutations [*shape, K], step_logprobs [*shape, K, K])``.

    Examples:
        >>> scores = torch.tensor([[1.0, 3.0, 2.0]])
        >>> perms, steps = decode_permutations(
        ...     lambda step, previous, placed: masked_log_softmax(scores, placed), (1,), 3, 0.0, "cpu"
        ... )
        >>> perms.tolist(), steps.shape
        ([[1, 2, 0]], torch.Size([1, 3, 3]))
    """
    k = num_candidates
    placed = torch.zeros(*shape, k, dtype=torch.bool, device=device)
    previous: Tensor | None = None
    picks, steps = [], []
    for step in range(k):
        logp = step_logprobs(step, previous, placed)
        previous = choose(logp.reshape(-1, k), temperature).reshape(shape)
        picks.append(previous)
        steps.append(logp)
        placed = placed.scatter(-1, previous.unsqueeze(-1), True)
    return torch.stack(picks, -1), torch.stack(steps, -2)


class Policy(nn.Module):
    """Base class of ranking policies (registered through ``flexrec_register_policies``).

    Subclasses set a unique ``name`` and implement :meth:`sample`, :meth:`log_probs` and
    :meth:`reference_log_probs`; :meth:`rank` has a generic implementation (greedy
    :meth:`sample`) that subclasses may override, and :meth:`prepare` is an optional hook (default
    no-op) to fit on the data module. Constructors may accept the context keyword arguments
    ``num_items``, ``num_features`` and ``num_needs``; the trainer passes dataset information for
    those that a constructor accepts.

    ``Rollout.logprobs`` are the log-probabilities of the policy at temperature 1 (a temperature only
    changes which items are drawn), so they equal :meth:`log_probs` of the same rollout.
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
            ``step_logprobs [B, G, K, K]`` (``-inf`` for already placed candidates), plus
            whatever else :meth:`log_probs` needs to rebuild them (e.g. ``reasoning``). The batch
            is not modified.
        """
        raise NotImplementedError

    def log_probs(
        self, batch: RankingBatch, permutations: Tensor, *, rollout: Rollout | None = None
    ) -> tuple[Tensor, Tensor]:
        """Recompute log-probabilities of given rankings, with gradients.

        Args:
            batch: ``B`` tasks.
            permutations: ``[B, G, K]`` candidate indices in placed order.
            rollout: the :class:`Rollout` (of the same ``B`` tasks) that ``permutations`` come
                from, when they were sampled. Policies whose rollouts carry more than the
                permutations (the LLM policy's reasoning tokens, :attr:`Rollout.reasoning`) read
                it there; the others ignore it. Callers that hold the rollout should pass it.

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
        self, batch: RankingBatch, permutations: Tensor, *, rollout: Rollout | None = None
    ) -> tuple[Tensor, Tensor]:
        """:meth:`log_probs` under the reference policy pi_ref (no gradients).

        Args:
            batch: ``B`` tasks.
            permutations: ``[B, G, K]``.
            rollout: the rollout ``permutations`` come from, if any (see :meth:`log_probs`).

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
