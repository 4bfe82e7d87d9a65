"""``ScoringPolicy``: a traditional ranker as a full :class:`~flexrec.policies.base.Policy`.

A traditional baseline gives every candidate one score ``s [B, K]`` that does not depend on the
items already placed. As a policy it is the Plackett–Luce model over the logits ``s / τ``: step
``k`` draws from the softmax of the logits over the candidates not yet placed, so
:meth:`ScoringPolicy.log_probs` is exact and consistent with :meth:`ScoringPolicy.sample`, and
greedy decoding is a stable descending sort of ``s`` (ties keep the prompt order, exactly like the
``feature:NAME`` reference rankings of :func:`flexrec.metrics.reference_ranking`).

By default a baseline has no trainable parameters (learned baselines fit theirs in
:meth:`~flexrec.policies.base.Policy.prepare` and freeze them). With ``trainable=True`` it gets a
zero-initialised per-item residual score ``r [num_items]`` that RL may post-train; pi_ref is the
baseline without the residual, which is exactly the initial policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from flexrec.policies.base import (
    Policy,
    decode_permutations,
    masked_log_softmax,
    placed_before,
    placed_order_logprobs,
    rollout_from_steps,
)
from flexrec.types import RankingBatch, Rollout

__all__ = ["ScoringPolicy"]


class ScoringPolicy(Policy):
    """Base class of baselines that score each candidate independently.

    Subclasses implement :meth:`scores`; learned ones also override
    :meth:`~flexrec.policies.base.Policy.prepare`.

    Args:
        temperature: τ of the policy's softmax over scores (logits ``s / τ``); smaller is sharper.
            Sampling at a rollout temperature rescales these logits once more.
        trainable: add a zero-initialised per-item residual score that RL can train.
        num_items: item vocabulary size (context), rows of the residual (``hash_buckets`` if None).
        hash_buckets: rows of the residual when ``num_items`` is unknown (ids hashed by modulo).
    """

    def __init__(
        self,
        temperature: float = 0.1,
        trainable: bool = False,
        num_items: int | None = None,
        hash_buckets: int = 4096,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        self.residual: nn.Embedding | None = None
        if trainable:
            self.residual = nn.Embedding(num_items or hash_buckets, 1)
            nn.init.zeros_(self.residual.weight)

    # ------------------------------------------------------------------ to implement
    def scores(self, batch: RankingBatch) -> Tensor:
        """Scores ``[B, K]`` of the candidates (higher ranks first), without gradients needed.

        Args:
            batch: ``B`` tasks with ``K`` candidates.

        Returns:
            ``[B, K]`` float scores in candidate order.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ policy
    def _total(self, batch: RankingBatch, reference: bool = False) -> Tensor:
        """Base scores plus the residual (unless ``reference``), ``[B, K]``."""
        with torch.no_grad():
            base = torch.nan_to_num(self.scores(batch).float())
        if self.residual is None or reference:
            return base
        ids = batch.candidate_ids.clamp_min(0) % self.residual.num_embeddings
        return base + self.residual(ids.to(self.residual.weight.device)).squeeze(-1).to(base)

    def _step_logprobs(self, total: Tensor, permutations: Tensor) -> Tensor:
        """``[B, G, K, K]`` per-step log-probabilities of the Plackett–Luce model."""
        b, g, k = permutations.shape
        logits = (total / self.temperature).view(b, 1, 1, k).expand(b, g, k, k)
        return masked_log_softmax(logits, placed_before(permutations))

    @torch.no_grad()
    def sample(self, batch: RankingBatch, group_size: int, temperature: float = 1.0) -> Rollout:
        """See :meth:`Policy.sample`; ``temperature == 0`` is the stable descending sort."""
        total = self._total(batch)
        b, k = total.shape
        g = group_size
        if temperature <= 0:
            order = torch.argsort(total, dim=-1, descending=True, stable=True)
            permutations = order.unsqueeze(1).expand(b, g, k).contiguous()
        else:
            logits = (total / self.temperature).unsqueeze(1).expand(b, g, k)
            permutations, _ = decode_permutations(
                lambda step, previous, placed: masked_log_softmax(logits, placed),
                (b, g),
                k,
                temperature,
                total.device,
            )
        return rollout_from_steps(permutations, self._step_logprobs(total, permutations))

    @torch.no_grad()
    def rank(self, batch: RankingBatch) -> Tensor:
        """Greedy ranking ``[B, K]``: candidates by descending score, ties in prompt order."""
        return torch.argsort(self._total(batch), dim=-1, descending=True, stable=True)

    def log_probs(
        self, batch: RankingBatch, permutations: Tensor, *, rollout: Rollout | None = None
    ) -> tuple[Tensor, Tensor]:
        """See :meth:`Policy.log_probs`; all ``K`` steps in one vectorised pass."""
        steps = self._step_logprobs(self._total(batch), permutations)
        return placed_order_logprobs(steps, permutations), steps

    @torch.no_grad()
    def reference_log_probs(
        self, batch: RankingBatch, permutations: Tensor, *, rollout: Rollout | None = None
    ) -> tuple[Tensor, Tensor]:
        """:meth:`log_probs` of the baseline without the trainable residual (= initial policy)."""
        steps = self._step_logprobs(self._total(batch, reference=True), permutations)
        return placed_order_logprobs(steps, permutations), steps

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The residual's weight when ``trainable``, else nothing (fitted weights are frozen)."""
        return [] if self.residual is None else [self.residual.weight]

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, trainable={self.residual is not None}"


def feedback_data(datamodule: Any) -> Any:
    """``datamodule.feedback_training_data()``: the train users' visible interactions.

    Raises:
        TypeError: the data module does not offer ``feedback_training_data``.
    """
    fn = getattr(datamodule, "feedback_training_data", None)
    if fn is None:
        raise TypeError(
            f"{type(datamodule).__name__} has no feedback_training_data(); learned baselines fit "
            "on the train users' interactions it returns"
        )
    return fn()


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run a block with ``torch.set_num_threads(num_threads)`` (None: unchanged), then restore.

    Small models fit faster on one thread, and far faster on a shared, oversubscribed CPU.
    """
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
