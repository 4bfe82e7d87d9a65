"""The clipped objective, exact KL and entropy against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from flexrec.objectives import masked_mean, policy_loss, step_entropy, step_kl

NEG_INF = float("-inf")


def _log(probs: list[list[float]]) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log()


P = [[0.5, 0.2, 0.0, 0.3, 0.0], [0.0, 0.0, 0.0, 1.0, 0.0], [0.1, 0.1, 0.1, 0.1, 0.6]]
Q = [[0.25, 0.25, 0.0, 0.5, 0.0], [0.0, 0.0, 0.0, 1.0, 0.0], [0.2, 0.2, 0.2, 0.2, 0.2]]


def test_step_kl_and_entropy_by_hand() -> None:
    kl = step_kl(_log(P), _log(Q))
    entropy = step_entropy(_log(P))
    expected_kl = [0.5 * math.log(2) + 0.2 * math.log(0.8) + 0.3 * math.log(0.6), 0.0]
    expected_kl.append(0.4 * math.log(0.5) + 0.6 * math.log(3))
    expected_h = [-(0.5 * math.log(0.5) + 0.2 * math.log(0.2) + 0.3 * math.log(0.3)), 0.0]
    expected_h.append(-(0.4 * math.log(0.1) + 0.6 * math.log(0.6)))
    torch.testing.assert_close(kl, torch.tensor(expected_kl, dtype=torch.float64))
    torch.testing.assert_close(entropy, torch.tensor(expected_h, dtype=torch.float64))
    assert expected_kl[0] == pytest.approx(0.148697, abs=1e-6)


def test_kl_is_zero_for_equal_policies_and_gradients_are_finite() -> None:
    logits = torch.randn(
        2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    placed = torch.tensor([[False] * 4, [True, False, False, False]] * 2, dtype=torch.bool)
    placed = placed.view(1, 1, 4, 4).expand(2, 3, 4, 4)
    logits = logits.masked_fill(placed, NEG_INF).requires_grad_(True)
    new = torch.log_softmax(logits, -1)
    kl = step_kl(new, new.detach())
    assert torch.equal(kl, torch.zeros_like(kl))
    (kl.sum() + step_entropy(new).sum()).backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    assert torch.equal(logits.grad[placed], torch.zeros_like(logits.grad[placed]))


def test_kl_gradient_matches_finite_difference_with_masked_entries() -> None:
    logits = torch.tensor([0.3, NEG_INF, -0.2, 1.0], dtype=torch.float64, requires_grad=True)
    ref = torch.log_softmax(torch.tensor([0.0, NEG_INF, 0.5, 0.1], dtype=torch.float64), -1)
    step_kl(torch.log_softmax(logits, -1), ref).backward()
    assert logits.grad is not None
    h = 1e-6
    for i in (0, 2, 3):
        up = logits.detach().clone()
        down = logits.detach().clone()
        up[i] += h
        down[i] -= h
        numeric = (
            step_kl(torch.log_softmax(up, -1), ref) - step_kl(torch.log_softmax(down, -1), ref)
        ) / (2 * h)
        assert logits.grad[i].item() == pytest.approx(numeric.item(), abs=1e-7)
    assert logits.grad[1].item() == 0.0


def test_clipped_loss_by_hand() -> None:
    # (ratio, advantage) -> min(rho A, clip(rho, 0.8, 1.2) A)
    ratios = [1.1, 1.5, 0.5, 0.9, 1.5, 0.5]
    advantages = [1.0, 1.0, -1.0, -2.0, -1.0, 1.0]
    surrogate = [1.1, 1.2, -0.8, -1.8, -1.5, 0.5]  # items 1 and 2 clipped
    new = torch.tensor(ratios, dtype=torch.float64).log().view(1, 1, 6).requires_grad_(True)
    old = torch.zeros(1, 1, 6, dtype=torch.float64)
    adv = torch.tensor(advantages, dtype=torch.float64).view(1, 1, 6)
    out = policy_loss(new, old, adv, beta=0.0, eta=0.0)
    assert out.policy_loss.item() == pytest.approx(-sum(surrogate) / 6, abs=1e-12)
    assert out.loss.item() == pytest.approx(-sum(surrogate) / 6, abs=1e-12)
    assert out.clip_fraction.item() == pytest.approx(2 / 6)
    assert out.kl.item() == 0.0 and out.entropy.item() == 0.0
    out.loss.backward()
    assert new.grad is not None
    # d/d logp of -rho A / 6 is -rho A / 6 where unclipped, 0 where clipped
    expected_grad = [-r * a / 6 for r, a in zip(ratios, advantages, strict=True)]
    expected_grad[1] = expected_grad[2] = 0.0
    torch.testing.assert_close(new.grad.flatten(), torch.tensor(expected_grad, dtype=torch.float64))


def test_asymmetric_clip_and_mask() -> None:
    new = torch.tensor([1.25, 0.85, 1.4], dtype=torch.float64).log().view(1, 1, 3)
    old = torch.zeros(1, 1, 3, dtype=torch.float64)
    adv = torch.tensor([2.0, -1.0, 3.0], dtype=torch.float64).view(1, 1, 3)
    out = policy_loss(new, old, adv, clip_low=0.1, clip_high=0.3, beta=0.0, eta=0.0)
    # 1.25 inside (0.9, 1.3): 2.5; 0.85 below: min(-0.85, -0.9) = -0.9; 1.4 above: 1.3 * 3 = 3.9
    assert out.policy_loss.item() == pytest.approx(-(2.5 - 0.9 + 3.9) / 3)
    assert out.clip_fraction.item() == pytest.approx(2 / 3)
    mask = torch.tensor([[[True, True, False]]])
    masked = policy_loss(new, old, adv, clip_low=0.1, clip_high=0.3, beta=0.0, eta=0.0, mask=mask)
    assert masked.policy_loss.item() == pytest.approx(-(2.5 - 0.9) / 2)
    assert masked.clip_fraction.item() == pytest.approx(1 / 2)


def test_total_loss_combines_kl_and_entropy() -> None:
    new_steps = _log(P).view(1, 1, 3, 5)
    ref_steps = _log(Q).view(1, 1, 3, 5)
    new = torch.zeros(1, 1, 3, dtype=torch.float64)
    adv = torch.tensor([[[1.0, -1.0, 0.5]]], dtype=torch.float64)
    out = policy_loss(new, new, adv, new_steps, ref_steps, beta=0.01, eta=0.005)
    kl = step_kl(_log(P), _log(Q)).mean().item()
    entropy = step_entropy(_log(P)).mean().item()
    assert out.policy_loss.item() == pytest.approx(-0.5 / 3)
    assert out.kl.item() == pytest.approx(kl)
    assert out.entropy.item() == pytest.approx(entropy)
    assert out.loss.item() == pytest.approx(-0.5 / 3 + 0.01 * kl - 0.005 * entropy)
    skip_last = torch.tensor([[[True, True, False]]])
    masked = policy_loss(new, new, adv, new_steps, ref_steps, mask=skip_last)
    assert masked.kl.item() == pytest.approx(step_kl(_log(P[:2]), _log(Q[:2])).mean().item())
    no_ref = policy_loss(new, new, adv, new_steps, None)
    assert no_ref.kl.item() == 0.0
    assert no_ref.entropy.item() == pytest.approx(entropy)


def test_masked_mean_of_empty_mask_is_zero() -> None:
    assert masked_mean(torch.ones(2, 3), torch.zeros(2, 3, dtype=torch.bool)).item() == 0.0
