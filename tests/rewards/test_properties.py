"""Hypothesis properties of NDCG and the item rewards."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flexrec.rewards import functional as F

REWARDS = (
    F.swap_rewards,
    F.swap_noncausal_rewards,
    F.independent_rewards,
    F.rank_dcg_rewards,
    F.sequence_rewards,
)

gain_values = st.one_of(
    st.integers(0, 4).map(float),
    st.just(0.0),
    st.floats(1e-6, 100.0, allow_nan=False, allow_infinity=False),
)
gain_lists = st.lists(gain_values, min_size=1, max_size=15)
cutoffs = st.one_of(st.none(), st.integers(1, 16))


def _t(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


@settings(max_examples=100, deadline=None)
@given(gain_lists, cutoffs)
def test_sorted_descending_has_nonnegative_swap_rewards(
    gains: list[float], cutoff: int | None
) -> None:
    best = _t(sorted(gains, reverse=True))
    assert (F.swap_rewards(best, cutoff) >= -1e-9).all()
    assert (F.swap_noncausal_rewards(best, cutoff) >= -1e-9).all()


@settings(max_examples=100, deadline=None)
@given(gain_lists, cutoffs)
def test_sorted_ascending_has_nonpositive_swap_rewards(
    gains: list[float], cutoff: int | None
) -> None:
    worst = _t(sorted(gains))
    assert (F.swap_rewards(worst, cutoff) <= 1e-9).all()


@settings(max_examples=100, deadline=None)
@given(gain_lists, cutoffs, st.floats(1e-3, 1e3))
def test_positive_gain_scaling_changes_nothing(
    gains: list[float], cutoff: int | None, alpha: float
) -> None:
    g = _t(gains)
    torch.testing.assert_close(F.ndcg(alpha * g, cutoff), F.ndcg(g, cutoff), atol=1e-9, rtol=0)
    for fn in REWARDS:
        torch.testing.assert_close(fn(alpha * g, cutoff), fn(g, cutoff), atol=1e-9, rtol=0)


@settings(max_examples=100, deadline=None)
@given(gain_lists, cutoffs)
def test_ndcg_in_unit_interval_and_one_when_sorted(gains: list[float], cutoff: int | None) -> None:
    g = _t(gains)
    value = F.ndcg(g, cutoff).item()
    assert -1e-12 <= value <= 1 + 1e-12
    best = F.ndcg(_t(sorted(gains, reverse=True)), cutoff).item()
    has_signal = F.idcg(g, cutoff).item() > 0
    assert abs(best - (1.0 if has_signal else 0.0)) <= 1e-12


@settings(max_examples=100, deadline=None)
@given(gain_lists, cutoffs)
def test_independent_sums_to_ndcg_and_rank_dcg_starts_at_ndcg(
    gains: list[float], cutoff: int | None
) -> None:
    g = _t(gains)
    r = F.ndcg(g, cutoff).item()
    assert abs(F.independent_rewards(g, cutoff).sum().item() - r) <= 1e-9
    assert abs(F.rank_dcg_rewards(g, cutoff)[0].item() - r) <= 1e-9


@settings(max_examples=100, deadline=None)
@given(gain_lists, cutoffs)
def test_last_causal_swap_reward_is_zero(gains: list[float], cutoff: int | None) -> None:
    assert F.swap_rewards(_t(gains), cutoff)[-1].item() == 0.0
