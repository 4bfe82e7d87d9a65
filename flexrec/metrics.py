"""Ranking metrics per need, on torchmetrics' retrieval metrics.

Graded NDCG uses the need's gains; Recall and MRR use the need's binary relevance. Tasks whose
gains are all 0 are skipped for NDCG (every ranking is equally good there) and tasks with no
relevant candidate for Recall and MRR (torchmetrics ``empty_target_action="skip"``); their shares
are logged as ``no_gain_rate`` and ``no_relevant_rate``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.retrieval import RetrievalMRR, RetrievalNormalizedDCG, RetrievalRecall

from flexrec.types import RankingBatch

__all__ = [
    "RankingMetrics",
    "check_reference",
    "is_valid_permutation",
    "ranking_scores",
    "reference_ranking",
]


def ranking_scores(ranking: Tensor) -> Tensor:
    """Scores whose descending order reproduces a ranking.

    Args:
        ranking: ``[B, K]`` candidate indices in placed order.

    Returns:
        ``[B, K]`` in candidate order: ``K - rank`` (the top item scores ``K``).

    Examples:
        >>> ranking_scores(torch.tensor([[2, 0, 1]])).tolist()
        [[2.0, 1.0, 3.0]]
    """
    b, k = ranking.shape
    scores = torch.empty(b, k, dtype=torch.float32, device=ranking.device)
    ranks = torch.arange(k, 0, -1, dtype=torch.float32, device=ranking.device).expand(b, k)
    return scores.scatter_(1, ranking, ranks)


def is_valid_permutation(ranking: Tensor) -> Tensor:
    """``[B]`` bool: whether each row of ``ranking`` ``[B, K]`` is a permutation of ``0..K-1``."""
    k = ranking.shape[-1]
    in_range = ((ranking >= 0) & (ranking < k)).all(-1)
    sorted_rows = ranking.clamp(0, k - 1).sort(-1).values
    return in_range & (sorted_rows == torch.arange(k, device=ranking.device)).all(-1)


def reference_ranking(
    name: str, batch: RankingBatch, feature_names: Sequence[str] = (), seed: int = 0
) -> Tensor:
    """A reference ranking ``[B, K]`` that gives metrics a scale.

    Args:
        name: ``oracle`` (true gains, descending), ``random`` (seeded uniform shuffle) or
            ``feature:NAME`` (the candidate feature column ``NAME``, descending — e.g.
            ``feature:popularity`` is the popularity baseline computed before each task's cut).
        batch: the tasks.
        feature_names: names of the columns of ``batch.candidate_features``.
        seed: seed of the random reference.

    Raises:
        ValueError: an unknown reference or feature name.
    """
    check_reference(name, feature_names)
    if name == "oracle":
        return torch.argsort(batch.gains, dim=-1, descending=True, stable=True)
    if name == "random":
        gen = torch.Generator().manual_seed(seed)
        noise = torch.rand(batch.gains.shape, generator=gen)
        return torch.argsort(noise, dim=-1).to(batch.gains.device)
    assert batch.candidate_features is not None
    column = batch.candidate_features[..., list(feature_names).index(name[8:])]
    return torch.argsort(column, dim=-1, descending=True, stable=True)


def check_reference(name: str, feature_names: Sequence[str] = ()) -> None:
    """Raise a one-line ``ValueError`` unless ``name`` is a valid reference ranking."""
    valid = ["oracle", "random", *(f"feature:{f}" for f in feature_names)]
    if name not in valid:
        raise ValueError(f"unknown reference ranking {name!r}; valid: {', '.join(valid)}")


def _collection(ks: Sequence[int], mrr_k: int) -> nn.ModuleDict:
    graded = MetricCollection(
        {f"ndcg@{k}": RetrievalNormalizedDCG(top_k=k, empty_target_action="skip") for k in ks}
    )
    binary = MetricCollection(
        {
            **{f"recall@{k}": RetrievalRecall(top_k=k, empty_target_action="skip") for k in ks},
            f"mrr@{mrr_k}": RetrievalMRR(top_k=mrr_k, empty_target_action="skip"),
        }
    )
    return nn.ModuleDict(
        {
            "graded": graded,
            "binary": binary,
            "valid": MeanMetric(),
            "no_gain": MeanMetric(),
            "no_relevant": MeanMetric(),
        }
    )


class RankingMetrics(nn.Module):
    """NDCG@k, Recall@k, MRR@k and the valid-permutation rate, per need.

    Args:
        needs: the need names whose tasks will be scored.
        ks: cutoffs for NDCG and Recall.
        mrr_k: cutoff for MRR.
    """

    def __init__(self, needs: Sequence[str], ks: Sequence[int] = (5, 10), mrr_k: int = 10) -> None:
        super().__init__()
        self.needs = list(needs)
        self.per_need = nn.ModuleDict({need: _collection(ks, mrr_k) for need in self.needs})
        self._next_index = 0

    def update(self, batch: RankingBatch, ranking: Tensor) -> None:
        """Score a batch's rankings ``[B, K]`` against its true gains and relevance."""
        valid = is_valid_permutation(ranking)
        scores = ranking_scores(ranking.clamp(0, ranking.shape[-1] - 1))
        b, k = ranking.shape
        indexes = (self._next_index + torch.arange(b, device=ranking.device)).unsqueeze(1)
        indexes = indexes.expand(b, k)
        self._next_index += b
        for need in set(batch.need):
            rows = torch.tensor([n == need for n in batch.need], device=ranking.device)
            parts = self.per_need[need]
            parts["graded"].update(scores[rows], batch.gains[rows].float(), indexes=indexes[rows])
            parts["binary"].update(scores[rows], batch.relevant[rows], indexes=indexes[rows])
            parts["valid"].update(valid[rows].float())
            parts["no_gain"].update((batch.gains[rows] <= 0).all(-1).float())
            parts["no_relevant"].update((~batch.relevant[rows]).all(-1).float())

    def compute(self) -> dict[str, Tensor]:
        """``{"ndcg@5/<need>": value, ...}`` for every need that received tasks."""
        out: dict[str, Tensor] = {}
        for need, parts in self.per_need.items():
            if parts["valid"].update_count == 0:
                continue
            for name, value in {**parts["graded"].compute(), **parts["binary"].compute()}.items():
                out[f"{name}/{need}"] = value
            out[f"valid_rate/{need}"] = parts["valid"].compute()
            out[f"no_gain_rate/{need}"] = parts["no_gain"].compute()
            out[f"no_relevant_rate/{need}"] = parts["no_relevant"].compute()
        return out

    def reset(self) -> None:
        """Forget every update.

        New states are made outside inference mode, so that the same metrics can be updated
        both by ``validate`` (inference mode) and by the validation loop inside ``fit`` (no-grad).
        """
        with torch.inference_mode(False):
            for parts in self.per_need.values():
                for metric in parts.values():
                    metric.reset()
        self._next_index = 0
