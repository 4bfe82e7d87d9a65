"""Advantage estimators against per-rollout loops and hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from flexrec.estimators import functional as F
from flexrec.estimators.builtin import (
    DrGRPOEstimator,
    GRPOEstimator,
    RLOOEstimator,
    UAGRPOEstimator,
    flexrec_register_advantage_estimators,
)
from flexrec.registry import registries
from flexrec.rewards import functional as RF
from flexrec.types import RewardOutput


def _rewards(seed: int, shape: tuple[int, int, int] = (3, 5, 4)) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64)


def _output(rewards: torch.Tensor, variance: torch.Tensor | None = None) -> RewardOutput:
    weights = torch.rand(rewards.shape, generator=torch.Generator().manual_seed(1)).double()
    return RewardOutput(
        rewards=rewards, list_metric=rewards[..., 0], weights=weights, variance=variance
    )


def standard_grpo(list_rewards: list[list[float]], eps: float) -> list[list[float]]:
    """(R_i - mean_g R) / (std_g R + eps) per task, population std, written with loops."""
    out = []
    for group in list_rewards:
        mean = sum(group) / len(group)
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / len(group))
        out.append([(r - mean) / (std + eps) for r in group])
    return out


def loop_group_relative(
    rewards: torch.Tensor, baseline: str, scale: str, eps: float
) -> torch.Tensor:
    b_len, g_len, k_len = rewards.shape
    r = rewards.tolist()
    centred = [[[0.0] * k_len for _ in range(g_len)] for _ in range(b_len)]
    for b in range(b_len):
        for k in range(k_len):
            if baseline == "position":
                mean = sum(r[b][g][k] for g in range(g_len)) / g_len
            else:
                mean = sum(r[b][g][j] for g in range(g_len) for j in range(k_len)) / (g_len * k_len)
            for g in range(g_len):
                centred[b][g][k] = r[b][g][k] - mean
    out = torch.tensor(centred, dtype=torch.float64)
    if scale == "none":
        return out
    for b in range(b_len):
        for k in range(k_len):
            if scale == "position":
                cells = [(b, g, k) for g in range(g_len)]
            elif scale == "group":
                cells = [(b, g, j) for g in range(g_len) for j in range(k_len)]
            else:
                cells = [
                    (x, g, j) for x in range(b_len) for g in range(g_len) for j in range(k_len)
                ]
            std = math.sqrt(sum(centred[x][g][j] ** 2 for x, g, j in cells) / len(cells))
            for g in range(g_len):
                out[b, g, k] = centred[b][g][k] / (std + eps)
    return out


def test_sequence_reward_with_grpo_is_standard_grpo() -> None:
    gen = torch.Generator().manual_seed(0)
    gains = torch.randint(0, 4, (4, 6, 7), generator=gen).double()
    rewards = RF.sequence_rewards(gains, 5)
    list_rewards = RF.ndcg(gains, 5).tolist()
    expected = torch.tensor(standard_grpo(list_rewards, 1e-6), dtype=torch.float64)
    for baseline in ("position", "group"):
        for scale in ("group", "position"):
            got = F.group_relative(rewards, baseline, scale, eps=1e-6)
            torch.testing.assert_close(got, expected.unsqueeze(-1).expand_as(got))
    got = GRPOEstimator()(_output(rewards))
    torch.testing.assert_close(got[:, :, 3], expected)


def test_hand_computed_grpo() -> None:
    # one task, G = 2, K = 2; position baseline: means (0.5, 1.0); centred (±0.5, ±1.0)
    r = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]], dtype=torch.float64)
    pooled = math.sqrt((0.25 + 1.0) / 2)
    expected = torch.tensor([[[0.5, 1.0], [-0.5, -1.0]]], dtype=torch.float64) / pooled
    torch.testing.assert_close(F.group_relative(r, eps=0.0), expected)
    torch.testing.assert_close(
        F.group_relative(r, scale="position", eps=0.0),
        torch.tensor([[[1.0, 1.0], [-1.0, -1.0]]], dtype=torch.float64),
    )
    # group baseline: mean 0.75, population std of (1, 2, 0, 0)
    std = math.sqrt(((0.25**2) + 1.25**2 + 2 * 0.75**2) / 4)
    torch.testing.assert_close(
        F.group_relative(r, baseline="group", eps=0.0),
        torch.tensor([[[0.25, 1.25], [-0.75, -0.75]]], dtype=torch.float64) / std,
    )


@pytest.mark.parametrize("baseline", ["position", "group"])
@pytest.mark.parametrize("scale", ["group", "position", "batch", "none"])
def test_group_relative_matches_loops(baseline: str, scale: str) -> None:
    rewards = _rewards(2)
    got = F.group_relative(rewards, baseline, scale, eps=1e-3)
    torch.testing.assert_close(got, loop_group_relative(rewards, baseline, scale, 1e-3))


def test_dr_grpo_is_centring_only() -> None:
    rewards = _rewards(3)
    expected = rewards - rewards.mean(1, keepdim=True)
    torch.testing.assert_close(DrGRPOEstimator()(_output(rewards)), expected)


def test_constant_rewards_give_zero_advantages() -> None:
    rewards = torch.full((2, 4, 3), 0.7, dtype=torch.float64)
    for scale in ("group", "position", "batch"):
        assert torch.equal(F.group_relative(rewards, scale=scale), torch.zeros_like(rewards))


def loop_rloo(rewards: torch.Tensor, baseline: str) -> torch.Tensor:
    b_len, g_len, k_len = rewards.shape
    r = rewards.tolist()
    out = torch.zeros_like(rewards)
    for b in range(b_len):
        for i in range(g_len):
            others = [g for g in range(g_len) if g != i]
            for k in range(k_len):
                if baseline == "position":
                    base = sum(r[b][g][k] for g in others) / len(others)
                else:
                    base = sum(r[b][g][j] for g in others for j in range(k_len))
                    base /= len(others) * k_len
                out[b, i, k] = r[b][i][k] - base
    return out


@pytest.mark.parametrize("baseline", ["position", "group"])
def test_rloo_matches_loop(baseline: str) -> None:
    rewards = _rewards(4)
    torch.testing.assert_close(F.rloo(rewards, baseline), loop_rloo(rewards, baseline))
    torch.testing.assert_close(
        RLOOEstimator(baseline)(_output(rewards)), loop_rloo(rewards, baseline)
    )


def test_rloo_single_rollout_is_zero() -> None:
    assert torch.equal(F.rloo(torch.ones(2, 1, 3)), torch.zeros(2, 1, 3))


def loop_uncertainty(
    weights: torch.Tensor, variance: torch.Tensor, eps: float, normalize: str, level: str
) -> torch.Tensor:
    b_len, g_len, k_len = weights.shape
    c = torch.zeros_like(weights)
    for b in range(b_len):
        for g in range(g_len):
            u = sum(weights[b, g, k].item() ** 2 * variance[b, g, k].item() for k in range(k_len))
            for k in range(k_len):
                if level == "item":
                    u = weights[b, g, k].item() ** 2 * variance[b, g, k].item()
                c[b, g, k] = 1.0 / (u + eps)
    if normalize == "batch":
        c = c / c.mean()
    elif normalize == "group":
        for b in range(b_len):
            c[b] = c[b] / c[b].mean()
    return c


@pytest.mark.parametrize("normalize", ["batch", "group", "none"])
@pytest.mark.parametrize("level", ["rollout", "item"])
def test_uncertainty_weights_match_loop(normalize: str, level: str) -> None:
    gen = torch.Generator().manual_seed(5)
    weights = torch.rand(3, 4, 5, generator=gen, dtype=torch.float64)
    variance = torch.rand(3, 4, 5, generator=gen, dtype=torch.float64)
    variance[0, 1] = 0.0
    got = F.uncertainty_weights(weights, variance, 0.05, normalize, level)
    torch.testing.assert_close(got, loop_uncertainty(weights, variance, 0.05, normalize, level))


@pytest.mark.parametrize("normalize", ["batch", "group"])
@pytest.mark.parametrize("level", ["rollout", "item"])
def test_ua_grpo_with_zero_or_no_variance_is_grpo(normalize: str, level: str) -> None:
    rewards = _rewards(6)
    grpo = GRPOEstimator()(_output(rewards))
    ua = UAGRPOEstimator(normalize=normalize, level=level)
    torch.testing.assert_close(ua(_output(rewards, torch.zeros_like(rewards))), grpo)
    torch.testing.assert_close(ua(_output(rewards, None)), grpo)


def test_ua_grpo_downweights_the_uncertain_rollout() -> None:
    # rollouts 0 and 1 have the same rewards; rollout 0's items are uncertain, rollout 1's exact
    rewards = torch.tensor([[[1.0, 0.5], [1.0, 0.5], [0.0, 0.0], [0.2, 0.1]]], dtype=torch.float64)
    variance = torch.tensor([[[0.4, 0.4], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    weights = torch.tensor([[[0.6, 0.3]] * 4], dtype=torch.float64)
    out = RewardOutput(rewards, rewards[..., 0], weights, variance)
    grpo = GRPOEstimator()(out)
    torch.testing.assert_close(grpo[0, 0], grpo[0, 1])
    ua = UAGRPOEstimator(eps_u=0.1)(out)
    assert (ua[0, 0].abs() < ua[0, 1].abs()).all()
    # by hand: u_0 = 0.36*0.4 + 0.09*0.4 = 0.18, c = (1/0.28, 10, 10, 10) / mean
    c = torch.tensor([1 / 0.28, 10.0, 10.0, 10.0], dtype=torch.float64)
    c = c / c.mean()
    torch.testing.assert_close(ua, grpo * c.view(1, 4, 1))


def test_nan_rewards_raise_one_line_error() -> None:
    rewards = _rewards(7)
    rewards[1, 2, 3] = float("nan")
    for fn in (F.group_relative, F.rloo):
        with pytest.raises(ValueError, match=r"1 NaN of 60 values \(first at index \(1, 2, 3\)\)"):
            fn(rewards)
    for estimator in (GRPOEstimator(), RLOOEstimator(), UAGRPOEstimator(), DrGRPOEstimator()):
        with pytest.raises(ValueError, match="NaN") as info:
            estimator(_output(rewards))
        assert "\n" not in str(info.value)
    rewards[1, 2, 3] = float("inf")
    with pytest.raises(ValueError, match="infinite"):
        F.group_relative(rewards)


def test_bad_arguments_name_the_options() -> None:
    with pytest.raises(ValueError, match="unknown baseline 'task'; valid options: position, group"):
        GRPOEstimator(baseline="task")
    with pytest.raises(ValueError, match="unknown scale"):
        F.group_relative(_rewards(0), scale="std")
    with pytest.raises(ValueError, match="unknown normalize"):
        UAGRPOEstimator(normalize="rollout")
    with pytest.raises(ValueError, match="eps_u must be > 0"):
        UAGRPOEstimator(eps_u=0.0)
    with pytest.raises(ValueError, match=r"shape \[B, G, K\]"):
        F.group_relative(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="variances must be >= 0"):
        F.uncertainty_weights(torch.ones(1, 2, 2), -torch.ones(1, 2, 2))


def test_hook_registers_the_estimators() -> None:
    names = [cls.name for cls in flexrec_register_advantage_estimators()]
    assert names == ["grpo", "dr_grpo", "rloo", "ua_grpo"]
    for name in names:
        assert registries.estimator.get(name).name == name
