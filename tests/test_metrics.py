"""Ranking metrics against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.functional.retrieval import (
    retrieval_normalized_dcg,
    retrieval_recall,
    retrieval_reciprocal_rank,
)

from flexrec.metrics import RankingMetrics, is_valid_permutation, ranking_scores, task_scores
from flexrec.types import RankingBatch


def _batch(gains: list[list[float]], relevant: list[list[bool]], needs: list[str]) -> RankingBatch:
    g = torch.tensor(gains)
    return RankingBatch(
        candidate_ids=torch.arange(g.numel()).reshape(g.shape),
        gains=g,
        observed=torch.ones_like(g, dtype=torch.bool),
        relevant=torch.tensor(relevant),
        need=needs,
        instruction=[""] * len(needs),
    )


def test_ranking_scores_and_validity() -> None:
    assert ranking_scores(torch.tensor([[1, 2, 0]])).tolist() == [[1.0, 3.0, 2.0]]
    rankings = torch.tensor([[0, 1, 2], [0, 0, 2], [0, 1, 3]])
    assert is_valid_permutation(rankings).tolist() == [True, False, False]


def test_worked_example_and_recall_mrr() -> None:
    # placed order gains (0, 1/3, 1, 0): METHOD.md's worked example with gains scaled by 1/3.
    batch = _batch(
        [[0.0, 1 / 3, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]],
        [[False, True, True, False], [False, False, False, False]],
        ["a", "a"],
    )
    metrics = RankingMetrics(["a", "b"], ks=(2, 4), mrr_k=4)
    metrics.update(batch, torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]]))
    out = metrics.compute()
    d = [1 / math.log2(p + 1) for p in range(1, 5)]
    idcg2 = 1 * d[0] + (1 / 3) * d[1]
    ndcg2_first = ((1 / 3) * d[1]) / idcg2
    assert math.isclose(out["ndcg@2/a"].item(), (ndcg2_first + 1.0) / 2, rel_tol=1e-5)
    assert math.isclose(out["ndcg@4/a"].item(), (0.586883 + 1.0) / 2, rel_tol=1e-5)
    # the second task has no relevant item: skipped for recall and MRR
    assert math.isclose(out["recall@2/a"].item(), 0.5)
    assert math.isclose(out["recall@4/a"].item(), 1.0)
    assert math.isclose(out["mrr@4/a"].item(), 0.5)
    assert out["valid_rate/a"].item() == 1.0
    assert not any(key.endswith("/b") for key in out)


def test_needs_are_separated() -> None:
    batch = _batch([[1.0, 0.0], [1.0, 0.0]], [[True, False], [True, False]], ["a", "b"])
    metrics = RankingMetrics(["a", "b"], ks=(1,), mrr_k=2)
    metrics.update(batch, torch.tensor([[0, 1], [1, 0]]))
    out = metrics.compute()
    assert out["ndcg@1/a"].item() == 1.0 and out["ndcg@1/b"].item() == 0.0
    assert out["mrr@2/b"].item() == 0.5
    metrics.reset()
    assert metrics.compute() == {}


def test_all_zero_gain_tasks_are_skipped_and_counted() -> None:
    batch = _batch([[0.0, 0.0], [0.0, 1.0]], [[False, False], [False, True]], ["a", "a"])
    metrics = RankingMetrics(["a"], ks=(1,), mrr_k=2)
    metrics.update(batch, torch.tensor([[0, 1], [0, 1]]))
    out = metrics.compute()
    assert out["ndcg@1/a"].item() == 0.0  # only the second task counts: its best item is 2nd
    assert out["no_gain_rate/a"].item() == 0.5 and out["no_relevant_rate/a"].item() == 0.5
    metrics.reset()
    metrics.update(batch, torch.tensor([[0, 1], [1, 0]]))
    assert metrics.compute()["ndcg@1/a"].item() == 1.0


def test_beyond_accuracy_diagnostics_by_hand() -> None:
    batch = _batch([[1.0, 0.5, 0.0, 0.0], [0.0] * 4, [1.0] * 4], [[True] * 4] * 3, ["a"] * 3)
    # popularity feature in column 1
    batch.candidate_features = torch.tensor(
        [
            [[0.0, 0.9], [0.0, 0.1], [0.0, 0.5], [0.0, 0.3]],
            [[0.0, 0.2], [0.0, 0.4], [0.0, 0.6], [0.0, 0.8]],
            [[0.0, 1.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]],
        ]
    )
    on = True
    batch.candidate_categories = torch.tensor(
        [
            [[on, 0, 0], [on, on, 0], [0, 0, on], [0, 0, 0]],  # categories {0, 1, 2}
            [[0, on, 0], [0, on, 0], [0, 0, 0], [0, 0, on]],  # categories {1, 2}
            [[0, 0, 0]] * 4,  # no category: skipped for coverage
        ],
        dtype=torch.bool,
    )
    metrics = RankingMetrics(["a"], ks=(2,), mrr_k=2, popularity_index=1, diagnostics_k=2)
    metrics.update(batch, torch.tensor([[0, 2, 1, 3], [3, 2, 1, 0], [2, 3, 0, 1]]))
    out = metrics.compute()
    # top 2 popularity: (0.9 + 0.5) / 2, (0.8 + 0.6) / 2, (0 + 0) / 2 → mean 0.4667
    assert math.isclose(out["top2_popularity/a"].item(), (0.7 + 0.7 + 0.0) / 3, rel_tol=1e-6)
    # coverage: task 0 top {0, 2} → categories {0, 2} of 3; task 1 top {3, 2} → {2} of {1, 2}
    assert math.isclose(out["top2_coverage/a"].item(), (2 / 3 + 1 / 2) / 2, rel_tol=1e-6)
    plain = RankingMetrics(["a"], ks=(2,), mrr_k=2)
    plain.update(_batch([[1.0, 0.0]], [[True, False]], ["a"]), torch.tensor([[0, 1]]))
    assert not any(key.startswith("top") for key in plain.compute())


def test_an_invalid_ranking_scores_the_candidates_it_leaves_out_zero() -> None:
    # a repeat leaves candidate 1 out: it scores 0, below every placed candidate, every time
    assert ranking_scores(torch.tensor([[0, 0, 2]]))[0, 1].item() == 0.0


def _random_tasks(seed: int, b: int = 40, k: int = 12) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    gains = torch.rand(b, k, generator=gen) * (torch.rand(b, k, generator=gen) < 0.4)
    gains[:3] = 0.0  # tasks without gain or relevant candidate: skipped
    ranking = torch.stack([torch.randperm(k, generator=gen) for _ in range(b)])
    return gains, gains > 0.5, ranking


@pytest.mark.parametrize("seed", [0, 1])
def test_task_scores_equal_torchmetrics_task_by_task(seed: int) -> None:
    gains, relevant, ranking = _random_tasks(seed)
    scores = ranking_scores(ranking)
    out = task_scores(scores, gains, relevant, ks=(5, 10), mrr_k=10)
    for i in range(gains.shape[0]):
        expected = {}
        if gains[i].sum() > 0:
            for k in (5, 10):
                expected[f"ndcg@{k}"] = retrieval_normalized_dcg(scores[i], gains[i], top_k=k)
        if relevant[i].any():
            for k in (5, 10):
                expected[f"recall@{k}"] = retrieval_recall(scores[i], relevant[i], top_k=k)
            expected["mrr@10"] = retrieval_reciprocal_rank(scores[i], relevant[i], top_k=10)
        for name, value in out.items():
            if name in expected:
                assert value[i].item() == pytest.approx(expected[name].item(), abs=1e-6), name
            else:
                assert math.isnan(value[i].item()), name


def test_per_task_rows_average_to_the_logged_aggregate() -> None:
    gains, relevant, ranking = _random_tasks(2)
    needs = ["a", "b"] * (gains.shape[0] // 2)
    batch = _batch(gains.tolist(), relevant.tolist(), needs)
    batch.meta = [{"task": 100 + i, "user": i % 7, "cut": 5} for i in range(len(needs))]
    metrics = RankingMetrics(["a", "b"], ks=(5, 10), mrr_k=10)
    for part in (slice(0, 25), slice(25, None)):  # two updates, as two batches
        metrics.update(batch.select(list(range(len(needs)))[part]), ranking[part])
    aggregate, rows = metrics.compute(), metrics.tasks()
    assert len(rows) == len(needs) and rows[0]["task"] == 100 and rows[8]["user"] == 1
    assert rows[0]["candidates"] != rows[1]["candidates"] and rows[0]["cut"] == 5
    for key, value in aggregate.items():
        metric, need = key.split("/")
        if metric.startswith("no_"):
            continue
        per_task = [r[metric] for r in rows if r["need"] == need and not math.isnan(r[metric])]
        assert sum(per_task) / len(per_task) == pytest.approx(value.item(), abs=1e-6), key
    metrics.reset()
    assert metrics.tasks() == []
