"""Ranking metrics per need, on torchmetrics' retrieval metrics.

Graded NDCG uses the need's gains; Recall and MRR use the need's binary relevance. Tasks whose
gains are all 0 are skipped for NDCG (every ranking is equally good there) and tasks with no
relevant candidate for Recall and MRR (torchmetrics ``empty_target_action="skip"``); their shares
are logged as ``no_gain_rate`` and ``no_relevant_rate``.

Beyond-accuracy diagnostics of the top ``d`` (default 5) of each ranking, when the batch carries
what they need: ``top5_popularity``, the mean popularity feature (``log1p(count before t) /
log1p(#users)``, in [0, 1]) of the top items, and ``top5_coverage``, the share of the candidate
set's categories that the top items cover (tasks whose candidates have no category are skipped).
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
    "top_coverage",
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


def top_coverage(categories: Tensor, top: Tensor) -> Tensor:
    """Share of the candidate set's categories covered by the top items, per task.

    Args:
        categories: ``[B, K, C]`` bool multi-hot categories in candidate order.
        top: ``[B, d]`` candidate indices of the top ``d`` ranks.

    Returns:
        ``[B']`` float for the ``B'`` tasks whose candidates have at least one category.

    Examples:
        >>> cats = torch.tensor([[[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 0]]], dtype=torch.bool)
        >>> top_coverage(cats, torch.tensor([[0, 2]]))  # {0, 2} of {0, 1, 2}
        tensor([0.6667])
    """
    cats = categories.bool()
    picked = cats.gather(1, top.unsqueeze(-1).expand(-1, -1, cats.shape[-1])).any(1)
    available = cats.any(1).sum(-1)
    has = available > 0
    return picked[has].sum(-1).float() / available[has].float()


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
            "popularity": MeanMetric(),
            "coverage": MeanMetric(),
        }
    )


class RankingMetrics(nn.Module):
    """NDCG@k, Recall@k, MRR@k and the valid-permutation rate, per need.

    Args:
        needs: the need names whose tasks will be scored.
        ks: cutoffs for NDCG and Recall.
        mrr_k: cutoff for MRR.
        popularity_index: column of ``candidate_features`` holding the popularity feature (None:
            no ``top{d}_popularity``).
        diagnostics_k: ``d``, the top of the ranking the beyond-accuracy diagnostics look at.
    """

    def __init__(
        self,
        needs: Sequence[str],
        ks: Sequence[int] = (5, 10),
        mrr_k: int = 10,
        popularity_index: int | None = None,
        diagnostics_k: int = 5,
    ) -> None:
        super().__init__()
        self.needs = list(needs)
        self.popularity_index = popularity_index
        self.diagnostics_k = diagnostics_k
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
            top = ranking[rows].clamp(0, k - 1)[:, : self.diagnostics_k]
            if self.popularity_index is not None and batch.candidate_features is not None:
                popularity = batch.candidate_features[rows][..., self.popularity_index].float()
                parts["popularity"].update(popularity.gather(1, top).mean(-1))
            if batch.candidate_categories is not None:
                coverage = top_coverage(batch.candidate_categories[rows], top)
                if coverage.numel():
                    parts["coverage"].update(coverage)

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
            d = self.diagnostics_k
            for key in ("popularity", "coverage"):
                if parts[key].update_count:
                    out[f"top{d}_{key}/{need}"] = parts[key].compute()
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
