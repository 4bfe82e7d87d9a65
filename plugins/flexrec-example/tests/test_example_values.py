"""Hand-computed values of the example plug-in's reward, estimator and need."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flexrec.errors import ConfigError
from flexrec.registry import registries
from flexrec.types import RankingBatch, RewardOutput, Rollout
from flexrec_example import DiverseSwap, HiddenGems, RLOOUncertainty
from flexrec_example.rewards import category_matrix, parse_categories, redundancy

TEXT = [
    "A (2000) | Drama, Comedy | mean rating 4.0 from 3 users",
    "B (2001) | Drama | no ratings yet",
    "C (2002) | Horror | mean rating 2.5 from 2 users",
]


def _batch(text: list[list[str]], k: int = 3) -> RankingBatch:
    b = len(text) or 1
    return RankingBatch(
        candidate_ids=torch.arange(k).repeat(b, 1),
        gains=torch.zeros(b, k),
        observed=torch.ones(b, k, dtype=torch.bool),
        relevant=torch.zeros(b, k, dtype=torch.bool),
        need=["maximize_interest"] * b,
        instruction=["rank"] * b,
        candidate_text=text,
    )


GAINS = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
ROLLOUT = Rollout(
    permutations=torch.tensor([[[0, 1, 2], [2, 1, 0]]]),
    logprobs=torch.zeros(1, 2, 3, dtype=torch.float64),
)


# ---------------------------------------------------------------- diverse_swap
def test_parse_categories_reads_the_need_item_text_format() -> None:
    assert parse_categories(TEXT) == [("Drama", "Comedy"), ("Drama",), ("Horror",)]
    assert parse_categories(["X | no category | no ratings yet"]) == [()]
    assert parse_categories(["f0=0.1 f1=0.9"]) is None


def test_category_matrix_uses_a_sorted_batch_vocabulary() -> None:
    cats = category_matrix(_batch([TEXT]), 3)
    assert cats is not None
    # vocabulary: Comedy, Drama, Horror
    assert cats.int().tolist() == [[[1, 1, 0], [0, 1, 0], [0, 0, 1]]]
    assert category_matrix(None, 3) is None
    assert category_matrix(_batch([]), 3) is None


def test_redundancy_by_hand() -> None:
    # placed: {Drama, Comedy}, {Drama}, {Comedy, Horror}, {} -> 0, 1, 1/2, 0
    cats = torch.tensor([[0, 1, 1], [0, 1, 0], [1, 0, 1], [0, 0, 0]], dtype=torch.bool)
    # columns: Horror, Drama, Comedy
    assert redundancy(cats).tolist() == [0.0, 1.0, 0.5, 0.0]
    assert redundancy(cats, cutoff=2).tolist() == [0.0, 1.0, 0.0, 0.0]


def test_diverse_swap_full_list_by_hand() -> None:
    # D = (1, 1/log2(3), 1/2) = (1, 0.6309298, 0.5), IDCG = 1.
    # rollout 0 places gains (1, 0, 0): swap r_1 = ((1 - .6309298) + (1 - .5)) / 2 = 0.4345351,
    #   categories {Drama, Comedy}, {Drama}, {Horror}: redundancy (0, 1, 0).
    # rollout 1 places gains (0, 0, 1): swap r_1 = -(1 - .5) / 2 = -0.25,
    #   r_2 = -(.6309298 - .5) = -0.1309298; categories {Horror}, {Drama}, {Drama, Comedy}:
    #   redundancy (0, 0, 1/2).
    out = DiverseSwap(penalty=0.1)(GAINS, ROLLOUT, batch=_batch([TEXT]))
    expected = torch.tensor(
        [[[0.4345351, -0.1, 0.0], [-0.25, -0.1309298 - 0.0, -0.05]]], dtype=torch.float64
    )
    torch.testing.assert_close(out.rewards, expected, atol=1e-7, rtol=0)
    torch.testing.assert_close(out.list_metric, torch.tensor([[1.0, 0.5]], dtype=torch.float64))


def test_diverse_swap_cutoff_by_hand() -> None:
    # c = 2: D = (1, 0.6309298, 0). Rollout 0: r_1 = ((1 - .6309298) + 1) / 2 = 0.6845351, the
    # repeated Drama at rank 2 costs 0.1. Rollout 1: r_1 = -1/2, r_2 = -0.6309298 and the
    # half-repeated item sits at rank 3, past the cutoff: no penalty.
    out = DiverseSwap(cutoff=2, penalty=0.1)(GAINS, ROLLOUT, batch=_batch([TEXT]))
    expected = torch.tensor(
        [[[0.6845351, -0.1, 0.0], [-0.5, -0.6309298, 0.0]]], dtype=torch.float64
    )
    torch.testing.assert_close(out.rewards, expected, atol=1e-7, rtol=0)


@pytest.mark.parametrize(
    "batch",
    [None, _batch([]), _batch([["f0=0.1", "f0=0.2", "f0=0.3"]])],
    ids=["no-batch", "no-text", "synthetic-text"],
)
def test_diverse_swap_degrades_to_swap(batch: RankingBatch | None) -> None:
    swap = registries.reward.build({"name": "swap", "args": {"cutoff": 2}})
    diverse = registries.reward.build({"name": "diverse_swap", "args": {"cutoff": 2}})
    torch.testing.assert_close(
        diverse(GAINS, ROLLOUT, batch=batch).rewards, swap(GAINS, ROLLOUT).rewards
    )


def test_diverse_swap_is_invariant_to_candidate_relabelling() -> None:
    relabel = torch.tensor([2, 0, 1])  # new candidate i is old candidate relabel[i]
    moved = Rollout(
        permutations=torch.argsort(relabel)[ROLLOUT.permutations], logprobs=ROLLOUT.logprobs
    )
    reward = DiverseSwap(penalty=0.3)
    a = reward(GAINS, ROLLOUT, batch=_batch([TEXT])).rewards
    b = reward(GAINS[:, relabel], moved, batch=_batch([[TEXT[i] for i in relabel]])).rewards
    torch.testing.assert_close(a, b)


def test_diverse_swap_rejects_a_negative_penalty() -> None:
    with pytest.raises(ConfigError, match="penalty must be >= 0"):
        registries.reward.build({"name": "diverse_swap", "args": {"penalty": -1}})


# ---------------------------------------------------------------- rloo_ua
def _output(variance: list[float] | None) -> RewardOutput:
    return RewardOutput(
        rewards=torch.tensor([[[3.0], [0.0], [0.0]]], dtype=torch.float64),
        list_metric=torch.zeros(1, 3, dtype=torch.float64),
        weights=torch.ones(1, 3, 1, dtype=torch.float64),
        variance=None
        if variance is None
        else torch.tensor(variance, dtype=torch.float64).view(1, 3, 1),
    )


def test_rloo_ua_by_hand() -> None:
    # RLOO: 3 - 0 = 3, 0 - 1.5 = -1.5, 0 - 1.5 = -1.5.
    # u = (0, 0.02, 0), c = 1 / (u + 0.01) = (100, 33.33, 100), mean 77.78 -> c = (9/7, 3/7, 9/7).
    adv = RLOOUncertainty(eps_u=0.01)(_output([0.0, 0.02, 0.0]))
    torch.testing.assert_close(
        adv.flatten(), torch.tensor([27 / 7, -4.5 / 7, -13.5 / 7], dtype=torch.float64)
    )
    clipped = RLOOUncertainty(eps_u=0.01, clip=1.0)(_output([0.0, 0.02, 0.0]))
    torch.testing.assert_close(
        clipped.flatten(), torch.tensor([1.0, -4.5 / 7, -1.0], dtype=torch.float64)
    )


def test_rloo_ua_without_variance_is_rloo() -> None:
    out = _output(None)
    rloo = registries.estimator.build("rloo")
    torch.testing.assert_close(registries.estimator.build("rloo_ua")(out), rloo(out))
    assert registries.estimator.build("rloo_ua")(out).flatten().tolist() == [3.0, -1.5, -1.5]


def test_rloo_ua_bad_options_fail_at_build() -> None:
    with pytest.raises(ConfigError, match="unknown normalize 'task'"):
        registries.estimator.build({"name": "rloo_ua", "args": {"normalize": "task"}})
    with pytest.raises(ConfigError, match="clip must be > 0"):
        registries.estimator.build({"name": "rloo_ua", "args": {"clip": 0}})


# ---------------------------------------------------------------- hidden_gems
class _Scale:
    threshold, maximum, relevant, name = 3.0, 5.0, 4.0, "rating"


def test_hidden_gems_by_hand() -> None:
    from flexrec.needs.base import NeedContext

    need = HiddenGems().bind(_Scale(), trend_window=30 * 86_400)
    labels = torch.tensor([5.0, 4.0, 2.0, 4.5])
    context = NeedContext(novelty=torch.zeros(4), trend=torch.tensor([1.0, 0.0, 1 / 3, 2 / 3]))
    # interest (1, 0.5, 0, 0.75) x (1 - trend) (0, 1, 2/3, 1/3)
    torch.testing.assert_close(need.gains(labels, context), torch.tensor([0.0, 0.5, 0.0, 0.25]))
    assert need.relevant(labels, context).tolist() == [False, True, False, False]
    assert need.window == 30 * 86_400
    nan = need.gains(torch.tensor([float("nan")]), NeedContext(novelty=0, trend=torch.zeros(1)))
    assert nan.tolist() == [0.0]


def test_hidden_gems_prompts() -> None:
    from flexrec.needs.base import ItemStats

    need = build = registries.need.build({"name": "hidden_gems", "args": {"window": 86_400}})
    assert isinstance(build, HiddenGems)
    item = ItemStats("Heat", 1995, ["Action"], count=3, mean_label=4.0, recent=1)
    assert need.item_text(item) == (
        "Heat (1995) | Action | mean rating 4.0 from 3 users | 1 views in the last 24 hours"
    )
    rng = np.random.default_rng(0)
    train = {need.instruction(rng, "train") for _ in range(50)}
    assert need.instructions[3] not in train and len(train) == 3
    assert need.instruction(rng, "heldout") == need.instructions[3]
    assert need.instruction(rng, "test") == need.instructions[0]
