"""Hypothesis properties of the advantage estimators."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flexrec.estimators import functional as F


@st.composite
def reward_tensors(draw: st.DrawFn) -> torch.Tensor:
    """``[B, G, K]`` rewards with B <= 3, 2 <= G <= 6, K <= 6, including ties and constants.

    Nonzero magnitudes stay >= 1e-3 so that squared differences cannot underflow (eps = 0 below).
    """
    b, g, k = draw(st.integers(1, 3)), draw(st.integers(2, 6)), draw(st.integers(1, 6))
    values = draw(
        st.lists(
            st.one_of(
                st.sampled_from([0.0, 0.5, 1.0]), st.floats(1e-3, 10.0), st.floats(-10.0, -1e-3)
            ),
            min_size=b * g * k,
            max_size=b * g * k,
        )
    )
    return torch.tensor(values, dtype=torch.float64).reshape(b, g, k)


@settings(max_examples=100, deadline=None)
@given(reward_tensors(), st.sampled_from(["group", "position", "batch", "none"]))
def test_grpo_position_baseline_has_zero_mean_per_position(
    rewards: torch.Tensor, scale: str
) -> None:
    adv = F.group_relative(rewards, "position", scale)
    assert adv.mean(1).abs().max().item() <= 1e-9 * (1 + rewards.abs().max().item())


@settings(max_examples=100, deadline=None)
@given(reward_tensors())
def test_grpo_group_baseline_has_zero_mean_per_task(rewards: torch.Tensor) -> None:
    adv = F.group_relative(rewards, "group", "group")
    assert adv.mean((1, 2)).abs().max().item() <= 1e-9


@settings(max_examples=100, deadline=None)
@given(reward_tensors())
def test_grpo_group_scale_has_unit_rms_or_zero(rewards: torch.Tensor) -> None:
    adv = F.group_relative(rewards, "position", "group", eps=0.0)
    rms = adv.square().mean((1, 2)).sqrt()
    constant = (rewards - rewards.mean(1, keepdim=True)).abs().amax((1, 2)) == 0
    torch.testing.assert_close(rms[~constant], torch.ones_like(rms[~constant]))


@settings(max_examples=100, deadline=None)
@given(reward_tensors(), st.sampled_from(["position", "group"]))
def test_rloo_has_zero_mean_over_rollouts(rewards: torch.Tensor, baseline: str) -> None:
    adv = F.rloo(rewards, baseline)
    dims = (1,) if baseline == "position" else (1, 2)
    assert adv.mean(dims).abs().max().item() <= 1e-9 * (1 + rewards.abs().max().item())


@settings(max_examples=100, deadline=None)
@given(reward_tensors(), st.floats(0.1, 10.0), st.floats(-5.0, 5.0))
def test_rloo_and_dr_grpo_are_shift_invariant_and_scale_linearly(
    rewards: torch.Tensor, alpha: float, shift: float
) -> None:
    moved = alpha * rewards + shift
    for fn in (F.rloo, lambda r: F.group_relative(r, scale="none")):
        torch.testing.assert_close(fn(moved), alpha * fn(rewards), atol=1e-8, rtol=1e-8)


@settings(max_examples=100, deadline=None)
@given(reward_tensors(), st.sampled_from(["batch", "group"]), st.sampled_from(["rollout", "item"]))
def test_uncertainty_weights_are_positive_with_unit_mean(
    rewards: torch.Tensor, normalize: str, level: str
) -> None:
    weights = rewards.abs() / 10
    variance = rewards.square() / 100
    c = F.uncertainty_weights(weights, variance, 1e-2, normalize, level)
    assert (c > 0).all()
    means = c.mean() if normalize == "batch" else c.mean((1, 2))
    torch.testing.assert_close(means, torch.ones_like(means))
