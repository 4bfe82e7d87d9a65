"""Core data types passed between flexrec components.

Shape letters (used in every docstring): ``B`` tasks in a batch, ``G`` rollouts per task,
``K`` candidates per task (= ranked positions), ``L`` history length, ``F`` candidate feature
dimension, ``T`` tokens.

A *candidate index* is a position ``0..K-1`` in a task's candidate list (as shown in the prompt).
Permutations are always expressed in candidate indices: ``permutations[b, g, k]`` is the candidate
placed at rank ``k`` (0-based) by rollout ``g`` of task ``b``. "Placed order" tensors are indexed by
rank, "candidate order" tensors by candidate index; :func:`gather_placed` converts the latter into the
former.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "DataInfo",
    "LossOutput",
    "RankingBatch",
    "RewardOutput",
    "Rollout",
    "gather_placed",
]


def gather_placed(values: Tensor, permutations: Tensor) -> Tensor:
    """Reorder per-candidate values into placed order.

    Args:
        values: ``[B, K]`` (or ``[B, K, ...]``) values in candidate order.
        permutations: ``[B, G, K]`` candidate indices in placed order.

    Returns:
        ``[B, G, K]`` (or ``[B, G, K, ...]``) with ``out[b, g, k] = values[b, permutations[b, g, k]]``.

    Examples:
        >>> v = torch.tensor([[10.0, 20.0, 30.0]])
        >>> gather_placed(v, torch.tensor([[[2, 0, 1]]])).tolist()
        [[[30.0, 10.0, 20.0]]]
    """
    b, g, k = permutations.shape
    expanded = values.unsqueeze(1).expand(b, g, *values.shape[1:])
    index = permutations
    for _ in range(values.dim() - 2):
        index = index.unsqueeze(-1)
    index = index.expand(b, g, k, *values.shape[2:])
    return torch.gather(expanded, 2, index)


def _positions(index: Tensor | list[int] | slice, size: int) -> list[int]:
    """Task positions selected by ``index`` among ``size`` tasks."""
    if isinstance(index, slice):
        return list(range(size))[index]
    if isinstance(index, Tensor):
        return index.tolist()
    return list(index)


@dataclass(frozen=True)
class DataInfo:
    """Facts about a data module that components need at construction time.

    Attributes:
        num_items: item vocabulary size (``candidate_ids`` and ``history_ids`` are below it).
        num_users: user vocabulary size.
        num_features: candidate feature dimension ``F`` of ``RankingBatch.candidate_features``.
        needs: need names, indexed by ``RankingBatch.need_index``.
        feature_names: names of the ``F`` feature columns.
    """

    num_items: int
    num_users: int
    num_features: int
    needs: tuple[str, ...]
    feature_names: tuple[str, ...] = ()

    def context(self) -> dict[str, int]:
        """Keyword arguments offered to component constructors that accept them."""
        return {
            "num_items": self.num_items,
            "num_users": self.num_users,
            "num_features": self.num_features,
            "num_needs": len(self.needs),
        }


@dataclass
class RankingBatch:
    """A batch of ``B`` closed-set ranking tasks with ``K`` candidates each.

    Tensor fields are batched; list fields have length ``B``. Labels, gains and relevance are in
    candidate order. ``gains`` holds the need's gain for every candidate computed from the **true**
    labels where observed; in sparse training ``observed`` is False where the label is hidden and the
    gain there must be filled by a feedback model (critic) before computing rewards. Evaluation
    batches are always fully observed.

    Attributes:
        candidate_ids: ``[B, K]`` long, dataset item indices of the candidates (prompt order).
        history_ids: ``[B, L]`` long, item indices of the user's history (oldest first), ``-1`` pad.
        history_labels: ``[B, L]`` float, the labels (rating / watch ratio) of the history items.
        user_ids: ``[B]`` long, dataset user indices.
        need_index: ``[B]`` long, index of the task's need in ``need_names``-wide vocabulary of
            the data module (used by native policies as a need embedding).
        gains: ``[B, K]`` float, need gain per candidate (0 where unobserved).
        observed: ``[B, K]`` bool, whether the candidate's label is observed.
        relevant: ``[B, K]`` bool, relevance flag for Recall/MRR.
        labels: ``[B, K]`` float, raw labels (NaN where unobserved).
        candidate_features: ``[B, K, F]`` float numeric candidate features computed only from data
            before the task's cut time (e.g. popularity, mean rating, recent count, novelty).
        candidate_categories: ``[B, K, C]`` bool multi-hot categories (genres, video tags) of the
            candidates, in the dataset's category vocabulary.
        need: need name per task.
        instruction: the natural-language need instruction per task.
        history_text: per task, ``L_b`` strings describing history items.
        candidate_text: per task, ``K`` strings describing candidates (prompt order).
        meta: per task provenance (dataset, user, cut time, seed, ...).
    """

    candidate_ids: Tensor
    gains: Tensor
    observed: Tensor
    relevant: Tensor
    need: list[str]
    instruction: list[str]
    history_ids: Tensor | None = None
    history_labels: Tensor | None = None
    user_ids: Tensor | None = None
    need_index: Tensor | None = None
    labels: Tensor | None = None
    candidate_features: Tensor | None = None
    candidate_categories: Tensor | None = None
    history_text: list[list[str]] = field(default_factory=list)
    candidate_text: list[list[str]] = field(default_factory=list)
    meta: list[dict[str, Any]] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        """``B``."""
        return int(self.candidate_ids.shape[0])

    @property
    def num_candidates(self) -> int:
        """``K``."""
        return int(self.candidate_ids.shape[1])

    def select(self, index: Tensor | list[int] | slice) -> RankingBatch:
        """The sub-batch of the tasks at ``index`` (tensor fields and list fields alike)."""
        positions = _positions(index, self.batch_size)
        picked: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                picked[f.name] = value[torch.as_tensor(positions, dtype=torch.long)]
            elif isinstance(value, list) and value:
                picked[f.name] = [value[i] for i in positions]
        return replace(self, **picked)

    def to(self, device: torch.device | str) -> RankingBatch:
        """Return a copy with every tensor field moved to ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return replace(self, **moved)


@dataclass
class Rollout:
    """``G`` sampled rankings for each of ``B`` tasks.

    Attributes:
        permutations: ``[B, G, K]`` long, candidate index placed at each rank.
        logprobs: ``[B, G, K]`` float, log π(a_k | x, a_<k) of each placed item under the sampling
            policy (detached).
        step_logprobs: ``[B, G, K, K]`` float or None; ``step_logprobs[b, g, k, c]`` is the
            log-probability of candidate ``c`` at step ``k`` (``-inf`` for candidates already
            placed). Needed for exact per-step KL and entropy.
        reasoning: None, or ``B`` lists of ``G`` lists of token ids (``T_bg`` each): the free text
            rollout ``g`` of task ``b`` wrote before ranking (the LLM policy's reasoning mode,
            end-of-turn and padding removed). It is context, not part of the objective; the
            policy's ``log_probs`` needs it, with the permutations, to rebuild the same contexts.
    """

    permutations: Tensor
    logprobs: Tensor
    step_logprobs: Tensor | None = None
    reasoning: list[list[list[int]]] | None = None

    @property
    def batch_size(self) -> int:
        """``B``."""
        return int(self.permutations.shape[0])

    @property
    def group_size(self) -> int:
        """``G``."""
        return int(self.permutations.shape[1])

    def select(self, index: Tensor | list[int] | slice) -> Rollout:
        """The rollouts of the tasks at ``index`` (as :meth:`RankingBatch.select`).

        Examples:
            >>> rollout = Rollout(torch.tensor([[[0, 1]], [[1, 0]]]), torch.zeros(2, 1, 2))
            >>> rollout.select([1]).permutations.tolist()
            [[[1, 0]]]
        """
        positions = _positions(index, self.batch_size)
        rows = torch.as_tensor(positions, dtype=torch.long)
        return Rollout(
            permutations=self.permutations[rows],
            logprobs=self.logprobs[rows],
            step_logprobs=None if self.step_logprobs is None else self.step_logprobs[rows],
            reasoning=None if self.reasoning is None else [self.reasoning[i] for i in positions],
        )


@dataclass
class RewardOutput:
    """Item-level rewards for a :class:`Rollout`, in placed order.

    Attributes:
        rewards: ``[B, G, K]`` one reward per placed item.
        list_metric: ``[B, G]`` the list metric R(y) (NDCG at the reward cutoff) of each rollout.
        weights: ``[B, G, K]`` w_k = D(k)/IDCG, the weight of each rank in R(y) (0 past the cutoff
            and where IDCG = 0). Used by uncertainty-aware estimators.
        variance: ``[B, G, K]`` variance σ² of each placed item's gain (0 for observed labels) or
            None when every gain is exact.
    """

    rewards: Tensor
    list_metric: Tensor
    weights: Tensor
    variance: Tensor | None = None


@dataclass
class LossOutput:
    """The clipped item-level policy objective and its parts (all scalars).

    Attributes:
        loss: total loss to minimise.
        policy_loss: the clipped surrogate term (negated, averaged over placed items).
        kl: mean exact per-step KL(π_θ ‖ π_ref).
        entropy: mean exact per-step entropy of π_θ.
        clip_fraction: share of items whose ratio was clipped.
    """

    loss: Tensor
    policy_loss: Tensor
    kl: Tensor
    entropy: Tensor
    clip_fraction: Tensor
