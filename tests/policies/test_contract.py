"""The "done when" properties: native policy (need index or instruction text), tiny LLM (LoRA, full fine-tuning, reasoning mode)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from flexrec.policies.base import Policy
from flexrec.testing.batches import make_batch

KINDS = ["native", "native_text", "llm_lora", "llm_full", "llm_reasoning"]


@pytest.fixture(params=KINDS)
def policy(request: pytest.FixtureRequest, make_policy: Callable[[str], Policy]) -> Policy:
    return make_policy(request.param)


@pytest.fixture
def batch():
    # Mixed history lengths give mixed prompt lengths, so LLM micro-batches are left-padded.
    return make_batch(batch_size=3, num_candidates=6, history_lengths=[1, 6, 3], seed=1)


def test_sampled_permutations_are_valid(policy: Policy, batch) -> None:
    torch.manual_seed(0)
    rollout = policy.sample(batch, group_size=5)
    assert rollout.permutations.shape == (3, 5, 6)
    assert rollout.logprobs.shape == (3, 5, 6)
    assert rollout.step_logprobs.shape == (3, 5, 6, 6)
    expected = torch.arange(6).expand(3, 5, 6)
    assert torch.equal(rollout.permutations.sort(-1).values, expected)
    # The last placed item is forced: log-probability exactly 0.
    assert torch.all(rollout.logprobs[..., -1] == 0)
    assert torch.all(rollout.logprobs <= 0)


def test_sample_logprobs_equal_recomputed(policy: Policy, batch) -> None:
    torch.manual_seed(1)
    rollout = policy.sample(batch, group_size=4)
    logprobs, step_logprobs = policy.log_probs(batch, rollout.permutations)
    assert logprobs.requires_grad
    torch.testing.assert_close(logprobs.detach(), rollout.logprobs, atol=1e-5, rtol=0)
    finite = rollout.step_logprobs > -torch.inf
    assert torch.equal(step_logprobs > -torch.inf, finite)
    torch.testing.assert_close(
        step_logprobs.detach()[finite], rollout.step_logprobs[finite], atol=1e-5, rtol=1e-6
    )


def test_each_task_alone_matches_the_padded_batch(policy: Policy, batch) -> None:
    torch.manual_seed(2)
    rollout = policy.sample(batch, group_size=3)
    for b in range(batch.batch_size):
        alone, _ = policy.log_probs(batch.select([b]), rollout.permutations[b : b + 1])
        torch.testing.assert_close(alone.detach(), rollout.logprobs[b : b + 1], atol=1e-5, rtol=0)


def test_step_distributions_sum_to_one_over_remaining(policy: Policy, batch) -> None:
    rollout = policy.sample(batch, group_size=2)
    probs = rollout.step_logprobs.exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 2, 6), atol=1e-5, rtol=0)
    # Placed candidates have probability exactly 0; step k has K - k remaining candidates.
    remaining = (rollout.step_logprobs > -torch.inf).sum(-1)
    assert torch.equal(remaining, torch.arange(6, 0, -1).expand(3, 2, 6))
    for k in range(1, 6):
        placed = rollout.permutations[:, :, :k]
        assert torch.all(rollout.step_logprobs[:, :, k].gather(-1, placed) == -torch.inf)


def test_greedy_rank_is_deterministic_and_matches_argmax(policy: Policy, batch) -> None:
    first = policy.rank(batch)
    torch.manual_seed(123)
    second = policy.rank(batch)
    assert torch.equal(first, second)
    assert torch.equal(first.sort(-1).values, torch.arange(6).expand(3, 6))
    _, steps = policy.log_probs(batch, first.unsqueeze(1))
    assert torch.equal(steps[:, 0].argmax(-1), first)


def test_reference_equals_initial_policy_and_gradient_step_changes_policy(
    policy: Policy, batch
) -> None:
    torch.manual_seed(3)
    rollout = policy.sample(batch, group_size=4)
    before, _ = policy.log_probs(batch, rollout.permutations)
    ref, ref_steps = policy.reference_log_probs(batch, rollout.permutations)
    torch.testing.assert_close(ref, before.detach(), atol=1e-6, rtol=0)
    params = policy.trainable_parameters()
    assert params and all(p.requires_grad for p in params)
    optimizer = torch.optim.SGD(params, lr=1e-3)
    # Push up the first rollout's log-likelihood.
    loss = -before[:, 0].sum()
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    optimizer.step()
    after, _ = policy.log_probs(batch, rollout.permutations)
    assert after[:, 0].sum() > before[:, 0].sum() + 1e-4
    # pi_ref has not moved.
    ref_after, ref_steps_after = policy.reference_log_probs(batch, rollout.permutations)
    torch.testing.assert_close(ref_after, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(ref_steps_after, ref_steps, atol=1e-6, rtol=0)
    assert not ref_after.requires_grad


def test_group_of_one_and_two_candidates(policy: Policy) -> None:
    small = make_batch(batch_size=2, num_candidates=2, seed=4)
    rollout = policy.sample(small, group_size=1)
    assert rollout.permutations.shape == (2, 1, 2)
    logprobs, _ = policy.log_probs(small, rollout.permutations)
    torch.testing.assert_close(logprobs.detach(), rollout.logprobs, atol=1e-5, rtol=0)
