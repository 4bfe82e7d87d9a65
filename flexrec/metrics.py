"""Ranking metrics per need, on torchmetrics' retrieval metrics.

Graded NDCG uses the need's gains; Recall and MRR use the need's binary relevance. Tasks whose
gains are all 0 are skipped for NDCG (every ranking is equally good there) and tasks with no
relevant candidate for Recall and MRR (torchmetrics ``empty_target_action="skip"``); their shares
are logged as ``no_gain_rate`` and ``no_relevant_rate``.

Beyond-accuracy diagnostics of the top ``d`` (default 5) of each ranking, when the batch carries
what they need: ``top5_popularity``, the mean popularity feature (``log1p(count before t) /
log1p(#users)``, in [0, 1]) of the top items, and ``top5_coverage``, the share of the candidate
set's categories that the top items cover (tasks whose candidates have no category are skipped).

Every update also keeps one row per task (:meth:`RankingMetrics.tasks`): the task's identity (index,
user, need, cut, a fingerprint of its candidates) and its own value of every metric
(:func:`task_scores`), NaN where the aggregate skips the task, so that the mean of a column over
its non-NaN values is the logged aggregate. Paired comparisons of two policies on the same tasks
(:mod:`flexrec.benchmark.paired`) are built from these rows.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

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
    "task_scores",
    "top_coverage",
]


def ranking_scores(ranking: Tensor) -> Tensor:
    """Scores whose descending order reproduces a ranking.

    Args:
        ranking: ``[B, K]`` candidate indices in placed order.

    Returns:
        ``[B, K]`` in candidate order: ``K - rank`` (the top item scores ``K``); 0 for a candidate
        that an invalid ranking (one with repeats) leaves out.

    Examples:
        >>> ranking_scores(torch.tensor([[2, 0, 1]])).tolist()
        [[2.0, 1.0, 3.0]]
    """
    b, k = ranking.shape
    scores = torch.zeros(b, k, dtype=torch.float32, device=ranking.device)
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


def task_scores(
    scores: Tensor, gains: Tensor, relevant: Tensor, ks: Sequence[int], mrr_k: int
) -> dict[str, Tensor]:
    """Each task's NDCG@k, Recall@k and MRR@k, as torchmetrics' retrieval metrics score it.

    torchmetrics' ``Retrieval*`` metrics (``empty_target_action="skip"``) average these per-task
    values over the tasks they do not skip; the values here are NaN for those tasks (all gains 0
    for NDCG, no relevant candidate for Recall and MRR), so the mean of the non-NaN values is the
    aggregate. Candidates are ranked by descending score; equal to torchmetrics whenever the
    scores have no ties (always for the scores of a valid permutation, :func:`ranking_scores`).
    Like torchmetrics, Recall and MRR count only candidates with a positive score.

    Args:
        scores: ``[B, K]`` candidate scores in candidate order (higher is ranked earlier).
        gains: ``[B, K]`` graded gains (NDCG).
        relevant: ``[B, K]`` bool relevance (Recall, MRR).
        ks: cutoffs of NDCG and Recall.
        mrr_k: cutoff of MRR.

    Returns:
        ``{"ndcg@k": [B], "recall@k": [B], "mrr@{mrr_k}": [B]}`` float32.

    Examples:
        >>> out = task_scores(
        ...     torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]]),
        ...     torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),
        ...     torch.tensor([[False, True, False], [False, False, False]]),
        ...     ks=(1, 2),
        ...     mrr_k=3,
        ... )
        >>> [round(v, 4) for v in out["ndcg@2"].tolist()]  # 1/log2(3); the second task is skipped
        [0.6309, nan]
        >>> out["recall@1"].tolist(), out["mrr@3"].tolist()
        ([0.0, nan], [0.5, nan])
    """
    k = scores.shape[-1]
    gains = gains.float()
    order = scores.argsort(dim=-1, descending=True, stable=True)
    discount = 1.0 / torch.log2(torch.arange(k, device=scores.device, dtype=torch.float32) + 2.0)
    placed_gains = gains.gather(1, order) * discount
    ideal = gains.sort(dim=-1, descending=True).values * discount
    no_gain = gains.sum(-1) == 0
    counted = (relevant.bool() & (scores > 0)).gather(1, order).float()
    n_relevant = relevant.float().sum(-1)
    no_relevant = n_relevant == 0
    nan = torch.tensor(float("nan"), device=scores.device)
    out: dict[str, Tensor] = {}
    for cut in ks:
        dcg, idcg = placed_gains[:, :cut].sum(-1), ideal[:, :cut].sum(-1)
        ndcg = torch.where(idcg != 0, dcg / idcg.where(idcg != 0, torch.ones_like(idcg)), 0.0)
        out[f"ndcg@{cut}"] = torch.where(no_gain, nan, ndcg)
    for cut in ks:
        recall = counted[:, :cut].sum(-1) / n_relevant.clamp(min=1)
        out[f"recall@{cut}"] = torch.where(no_relevant, nan, recall)
    top = counted[:, :mrr_k]
    first = top.argmax(-1).float()  # the first relevant rank, when there is one
    reciprocal = torch.where(top.any(-1), 1.0 / (first + 1.0), 0.0)
    out[f"mrr@{mrr_k}"] = torch.where(no_relevant, nan, reciprocal)
    return out


def _task_identity(batch: RankingBatch, first_index: int) -> list[dict[str, Any]]:
    """``task``, ``user``, ``need``, ``cut`` and ``candidates`` (a CRC-32 of the candidate ids in
    prompt order) of each task: from ``batch.meta`` where it has them, else the running index of
    the task and ``batch.user_ids``."""
    metas = batch.meta or [{} for _ in range(batch.batch_size)]
    users = batch.user_ids.tolist() if batch.user_ids is not None else [None] * batch.batch_size
    candidates = batch.candidate_ids.detach().cpu().to(torch.int64).numpy()
    rows = []
    for i, meta in enumerate(metas):
        user = meta.get("user", users[i])
        rows.append(
            {
                "task": meta.get("task", first_index + i),
                "user": "" if user is None else user,
                "need": batch.need[i],
                "cut": meta.get("cut", ""),
                "candidates": f"{zlib.crc32(candidates[i].tobytes()):08x}",
            }
        )
    return rows


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
        self.ks, self.mrr_k = tuple(ks), mrr_k
        self.popularity_index = popularity_index
        self.diagnostics_k = diagnostics_k
        self.per_need = nn.ModuleDict({need: _collection(ks, mrr_k) for need in self.needs})
        self._next_index = 0
        self._tasks: list[dict[str, Any]] = []

    def update(self, batch: RankingBatch, ranking: Tensor) -> None:
        """Score a batch's rankings ``[B, K]`` against its true gains and relevance."""
        valid = is_valid_permutation(ranking)
        scores = ranking_scores(ranking.clamp(0, ranking.shape[-1] - 1))
        b, k = ranking.shape
        indexes = (self._next_index + torch.arange(b, device=ranking.device)).unsqueeze(1)
        indexes = indexes.expand(b, k)
        self._record_tasks(batch, ranking, scores, valid)
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

    def _record_tasks(
        self, batch: RankingBatch, ranking: Tensor, scores: Tensor, valid: Tensor
    ) -> None:
        """Keep one row per task: its identity and its value of every metric (NaN: skipped)."""
        k, d = ranking.shape[-1], self.diagnostics_k
        values = task_scores(scores, batch.gains, batch.relevant, self.ks, self.mrr_k)
        values["valid_rate"] = valid.float()
        top = ranking.clamp(0, k - 1)[:, :d]
        if self.popularity_index is not None and batch.candidate_features is not None:
            popularity = batch.candidate_features[..., self.popularity_index].float()
            values[f"top{d}_popularity"] = popularity.gather(1, top).mean(-1)
        if batch.candidate_categories is not None:
            cats = batch.candidate_categories.bool()
            picked = cats.gather(1, top.unsqueeze(-1).expand(-1, -1, cats.shape[-1])).any(1)
            available = cats.any(1).sum(-1).float()
            coverage = picked.sum(-1).float() / available.clamp(min=1)
            values[f"top{d}_coverage"] = torch.where(available > 0, coverage, math.nan)
        columns = {name: value.detach().cpu().tolist() for name, value in values.items()}
        for i, row in enumerate(_task_identity(batch, self._next_index)):
            self._tasks.append({**row, **{name: column[i] for name, column in columns.items()}})

    def tasks(self) -> list[dict[str, Any]]:
        """One row per task scored since the last :meth:`reset`, in update order.

        Keys: ``task``, ``user``, ``need``, ``cut``, ``candidates`` (see the module docstring), then
        ``ndcg@k``, ``recall@k``, ``mrr@k``, ``valid_rate`` and, when the batches carry what they
        need, ``top{d}_popularity`` and ``top{d}_coverage`` (floats, NaN where the aggregate skips
        the task). Rows are kept by this process only (not gathered across distributed ranks).
        """
        return list(self._tasks)

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
        self._tasks = []
