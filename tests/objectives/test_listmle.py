"""ListMLE: hand-computed likelihoods, gradients against a slow loop reference, ties, truncation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from flexrec.objectives import (
    gain_sorted_permutations,
    listmle_loss,
    plackett_luce_logprobs,
    positive_prefix_mask,
)
from flexrec.objectives.base import Targets
from flexrec.objectives.builtin import ListMLEObjective
from flexrec.registry import registries
from flexrec.testing.batches import make_batch


def test_plackett_luce_likelihood_of_a_small_permutation_by_hand() -> None:
    # scores s = (1, 2, 0), target a = (1, 0, 2):
    # log P = [2 - log(e^1 + e^2 + e^0)] + [1 - log(e^1 + e^0)] + [0 - log(e^0)]
    scores = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    logprobs = plackett_luce_logprobs(scores, torch.tensor([1, 0, 2]))
    first = 2.0 - math.log(math.e + math.e**2 + 1.0)
    second = 1.0 - math.log(math.e + 1.0)
    assert logprobs.tolist() == pytest.approx([first, second, 0.0], abs=1e-12)
    assert first + second == pytest.approx(-0.720868, abs=1e-6)
    lp = logprobs.view(1, 1, 3)
    # per item over all 3 positions, and truncated after the 2nd (a 3rd item of gain 0)
    assert listmle_loss(lp).item() == pytest.approx(0.720868 / 3, abs=1e-6)
    mask = torch.tensor([[[True, True, False]]])
    assert listmle_loss(lp, mask).item() == pytest.approx(0.720868 / 2, abs=1e-6)
    assert listmle_loss(lp, mask, torch.tensor(4.0)).item() == pytest.approx(0.720868 / 4, abs=1e-6)


def _slow_listmle(scores: Tensor, perms: Tensor, mask: Tensor, normalizer: float) -> Tensor:
    """ListMLE with explicit loops: ``-sum s(a_k) - log sum_{j >= k} exp s(a_j)``."""
    total = scores.new_zeros(())
    b_size, g_size, k_size = perms.shape
    for b in range(b_size):
        for g in range(g_size):
            for k in range(k_size):
                if not mask[b, g, k]:
                    continue
                remaining = [int(perms[b, g, j]) for j in range(k, k_size)]
                denom = sum(torch.exp(scores[b, g, c]) for c in remaining)
                total = total - (scores[b, g, int(perms[b, g, k])] - torch.log(denom))
    return total / normalizer


def test_gradient_matches_autograd_of_a_slow_loop_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    b, g, k = 2, 2, 5
    scores = torch.randn(b, g, k, dtype=torch.float64, generator=gen, requires_grad=True)
    perms = torch.stack([torch.randperm(k, generator=gen) for _ in range(b * g)]).view(b, g, k)
    mask = torch.rand(b, g, k, generator=gen) < 0.7
    fast = listmle_loss(plackett_luce_logprobs(scores, perms), mask)
    (grad_fast,) = torch.autograd.grad(fast, scores)
    slow = _slow_listmle(scores, perms, mask, float(mask.sum()))
    (grad_slow,) = torch.autograd.grad(slow, scores)
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(grad_fast, grad_slow)


def test_gain_sorted_permutations_sort_descending_and_break_ties_at_random() -> None:
    gains = torch.tensor([[0.0, 1.0, 0.5, 1.0, 0.0, 0.2]])
    seen = set()
    for seed in range(60):
        perm = gain_sorted_permutations(gains, torch.Generator().manual_seed(seed))[0]
        placed = gains[0, perm]
        assert (placed[:-1] >= placed[1:]).all()
        assert sorted(perm.tolist()) == list(range(6))
        seen.add(tuple(perm.tolist()))
    # the two tied pairs (candidates 1 and 3, candidates 0 and 4): all four orders occur
    assert seen == {
        (1, 3, 2, 5, 0, 4),
        (3, 1, 2, 5, 0, 4),
        (1, 3, 2, 5, 4, 0),
        (3, 1, 2, 5, 4, 0),
    }


def test_tie_breaking_is_uniform_and_reproducible_under_the_global_seed() -> None:
    gains = torch.zeros(4000, 3)
    torch.manual_seed(3)
    perms = gain_sorted_permutations(gains)
    torch.manual_seed(3)
    assert torch.equal(perms, gain_sorted_permutations(gains))
    first = torch.bincount(perms[:, 0], minlength=3).double() / len(perms)
    torch.testing.assert_close(
        first, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.03, rtol=0
    )


def test_truncation_keeps_the_positions_up_to_the_last_positive_gain() -> None:
    placed = torch.tensor([[3.0, 1.0, 1.0, 0.0, 0.0], [0.0] * 5, [2.0, 2.0, 1.0, 1.0, 0.5]])
    assert positive_prefix_mask(placed).int().tolist() == [
        [1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1],
    ]
    assert positive_prefix_mask(placed, truncate=False).all()


def _targets(objective: ListMLEObjective, gains: Tensor, seed: int = 0) -> Targets:
    batch = make_batch(batch_size=gains.shape[0], num_candidates=gains.shape[1])
    torch.manual_seed(seed)
    return objective.targets(
        batch, gains, None, policy=None, reward=None, estimator=None, group_size=8, temperature=1.0
    )


def test_listmle_targets_one_gain_sorted_permutation_per_task() -> None:
    gains = torch.tensor([[0.0, 2.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    objective = registries.objective.build("listmle")
    targets = _targets(objective, gains)
    assert targets.permutations.shape == (3, 1, 4) and targets.rollout is None
    assert targets.permutations[0, 0, :2].tolist() == [1, 2]
    assert targets.tensors["mask"].int().tolist() == [
        [[1, 1, 0, 0]],
        [[0, 0, 0, 0]],
        [[1, 1, 1, 1]],
    ]
    assert objective.normalizer(targets).item() == 6.0  # included positions
    assert targets.logs["positions"].item() == pytest.approx(2.0)
    per_task = registries.objective.build({"name": "listmle", "args": {"normalize": "task"}})
    assert per_task.normalizer(_targets(per_task, gains)).item() == 2.0  # tasks with a position
    full = registries.objective.build({"name": "listmle", "args": {"truncate": False}})
    assert full.normalizer(_targets(full, gains)).item() == 12.0


def test_listmle_loss_is_the_mean_negative_log_likelihood_of_the_target() -> None:
    gains = torch.tensor([[0.0, 2.0, 1.0, 0.0], [3.0, 0.0, 0.0, 1.0]])
    objective = ListMLEObjective()
    targets = _targets(objective, gains)
    scores = torch.randn(2, 1, 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    logprobs = plackett_luce_logprobs(scores, targets.permutations)
    out = objective.loss(logprobs, torch.zeros(2, 1, 4, 4), targets)
    # two positions per task (gains 2, 1 and 3, 1), four in all
    expected = -(logprobs[0, 0, :2].sum() + logprobs[1, 0, :2].sum()) / 4
    torch.testing.assert_close(out.loss, expected)
    assert out.logs == {}


def test_listmle_rejects_an_unknown_normalisation() -> None:
    from flexrec.errors import ConfigError

    with pytest.raises(ConfigError, match="normalize must be one of item, task"):
        registries.objective.build({"name": "listmle", "args": {"normalize": "list"}})
