"""Hand-computed values of the NDCG and reward functions (METHOD.md §3 worked example)."""

from __future__ import annotations

import math

import pytest
import torch

from flexrec.registry import registries
from flexrec.rewards import functional as F
from flexrec.rewards.builtin import (
    IndependentReward,
    RankDCGReward,
    SequenceReward,
    SwapNonCausalReward,
    SwapReward,
    flexrec_register_rewards,
)
from flexrec.types import Rollout

EXAMPLE = torch.tensor([0.0, 1.0, 3.0, 0.0], dtype=torch.float64)
D2 = 1 / math.log2(3)
D3 = 0.5
D4 = 1 / math.log2(5)
IDCG = 3.0 + D2


def _close(actual: torch.Tensor, expected: list[float] | float, atol: float = 1e-6) -> None:
    torch.testing.assert_close(
        actual, torch.tensor(expected, dtype=actual.dtype), atol=atol, rtol=0.0
    )


def test_discounts_values_and_cutoff() -> None:
    _close(F.discounts(4, dtype=torch.float64), [1.0, D2, D3, D4], atol=1e-15)
    _close(F.discounts(4, 2, dtype=torch.float64), [1.0, D2, 0.0, 0.0], atol=1e-15)
    _close(F.discounts(3, 10, dtype=torch.float64), [1.0, D2, D3], atol=1e-15)
    assert F.discounts(3, dtype=torch.float16).dtype == torch.float16


def test_bad_cutoff_is_rejected() -> None:
    with pytest.raises(ValueError, match="cutoff"):
        F.swap_rewards(EXAMPLE, 0)
    with pytest.raises(ValueError, match="cutoff"):
        SwapReward(cutoff=0)


def test_worked_example_full_list() -> None:
    _close(F.ndcg(EXAMPLE), 0.586883)
    _close(F.swap_rewards(EXAMPLE), [-0.171588, -0.008484, 0.057277, 0.0])
    _close(F.independent_rewards(EXAMPLE), [0.0, 0.173765, 0.413117, 0.0])
    _close(F.sequence_rewards(EXAMPLE), [0.586883] * 4)
    _close(F.rank_dcg_rewards(EXAMPLE), [0.586883, 0.586883, 0.413117, 0.0])


def test_worked_example_cutoff_two() -> None:
    _close(F.ndcg(EXAMPLE, 2), 0.173765)
    _close(F.swap_rewards(EXAMPLE, 2), [-0.309294, -0.086883, 0.0, 0.0])
    _close(F.independent_rewards(EXAMPLE, 2), [0.0, 0.173765, 0.0, 0.0])


def test_worked_example_noncausal_by_hand() -> None:
    # r_k = (1/3) sum_{j != k} (g_k - g_j)(D_k - D_j) / IDCG with g = (0, 1, 3, 0).
    d = [1.0, D2, D3, D4]
    g = [0.0, 1.0, 3.0, 0.0]
    expected = [
        sum((g[k] - g[j]) * (d[k] - d[j]) for j in range(4) if j != k) / 3 / IDCG for k in range(4)
    ]
    # r_1 by hand: ((0-1)(1-D2) + (0-3)(1-D3) + 0) / 3 / IDCG
    assert expected[0] == pytest.approx((-(1 - D2) - 3 * 0.5) / 3 / IDCG, abs=1e-15)
    _close(F.swap_noncausal_rewards(EXAMPLE), expected, atol=1e-12)


def test_rank_weights_and_zero_idcg() -> None:
    w = F.rank_weights(EXAMPLE)
    _close(w, [1 / IDCG, D2 / IDCG, D3 / IDCG, D4 / IDCG], atol=1e-12)
    zeros = torch.zeros(2, 3, 5, dtype=torch.float64)
    for fn in (
        F.rank_weights,
        F.ndcg,
        F.swap_rewards,
        F.swap_noncausal_rewards,
        F.independent_rewards,
        F.rank_dcg_rewards,
        F.sequence_rewards,
    ):
        out = fn(zeros, 3)
        assert torch.equal(out, torch.zeros_like(out)), fn.__name__
    # positive gains only beyond the cutoff: IDCG = 0 as well
    _close(F.ndcg(torch.tensor([0.0, 0.0, 2.0]), 1), 0.0)
    # an IDCG whose reciprocal overflows counts as 0 instead of giving inf/NaN
    tiny = torch.tensor([0.0, 1e-320], dtype=torch.float64)
    _close(F.swap_rewards(tiny), [0.0, 0.0], atol=0.0)


def test_single_item_lists() -> None:
    one = torch.tensor([[2.0], [0.0]], dtype=torch.float64)
    _close(F.ndcg(one), [1.0, 0.0])
    _close(F.swap_rewards(one), [[0.0], [0.0]])
    _close(F.swap_noncausal_rewards(one), [[0.0], [0.0]])


def test_leading_dims_are_batched_independently() -> None:
    gen = torch.Generator().manual_seed(0)
    gains = torch.randint(0, 3, (2, 3, 4, 6), generator=gen).double()
    for fn in (F.swap_rewards, F.swap_noncausal_rewards, F.rank_dcg_rewards, F.independent_rewards):
        batched = fn(gains, 4)
        single = torch.stack([fn(row, 4) for row in gains.reshape(-1, 6)]).reshape(gains.shape)
        torch.testing.assert_close(batched, single, atol=1e-12, rtol=0.0)


def test_dtype_and_device_follow_input() -> None:
    out = F.swap_rewards(EXAMPLE.float())
    assert out.dtype == torch.float32
    _close(out, [-0.171588, -0.008484, 0.057277, 0.0], atol=1e-6)


def test_reward_classes_score_a_rollout() -> None:
    gains = torch.tensor([[3.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    # placed order (0, 1, 3, 0) = candidates 1, 3, 0, 2
    perms = torch.tensor([[[1, 3, 0, 2], [0, 3, 1, 2]]])
    variance = torch.tensor([[0.0, 0.5, 0.1, 0.0]], dtype=torch.float64)
    rollout = Rollout(permutations=perms, logprobs=torch.zeros(1, 2, 4))
    out = SwapReward()(gains, rollout, variance=variance)
    _close(out.rewards[0, 0], [-0.171588, -0.008484, 0.057277, 0.0])
    _close(out.list_metric, [[0.586883, 1.0]])
    _close(out.weights[0, 1], [1 / IDCG, D2 / IDCG, D3 / IDCG, D4 / IDCG], atol=1e-12)
    _close(out.variance, [[[0.5, 0.0, 0.0, 0.1], [0.0, 0.0, 0.5, 0.1]]], atol=0.0)
    out2 = SwapReward(cutoff=2)(gains, rollout)
    _close(out2.rewards[0, 0], [-0.309294, -0.086883, 0.0, 0.0])
    _close(out2.list_metric[0, 0], 0.173765)
    _close(IndependentReward()(gains, rollout).rewards[0, 0], [0.0, 0.173765, 0.413117, 0.0])
    _close(SequenceReward()(gains, rollout).rewards[0, 1], [1.0] * 4)
    _close(RankDCGReward()(gains, rollout).rewards[0, 0], [0.586883, 0.586883, 0.413117, 0.0])
    noncausal = SwapNonCausalReward()(gains, rollout).rewards
    torch.testing.assert_close(noncausal[0, 0], F.swap_noncausal_rewards(EXAMPLE))


def test_hook_registers_the_five_rewards() -> None:
    names = [cls.name for cls in flexrec_register_rewards()]
    assert names == ["sequence", "swap", "swap_noncausal", "independent", "rank_dcg"]
    for name in names:
        assert registries.reward.get(name).name == name
