"""The shared constrained-decoding math."""

from __future__ import annotations

import torch

from flexrec.policies.base import (
    choose,
    decode_permutations,
    masked_log_softmax,
    placed_before,
    placed_order_logprobs,
    rollout_from_steps,
)


def test_masked_log_softmax_renormalises_over_remaining() -> None:
    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    placed = torch.tensor([[False, True, False, True]])
    logp = masked_log_softmax(scores, placed)
    assert logp[0, 1] == -torch.inf and logp[0, 3] == -torch.inf
    expected = torch.tensor([1.0, 2.0**0 * torch.e**2]) / (1.0 + torch.e**2)
    torch.testing.assert_close(logp[0, [0, 2]].exp(), expected)


def test_placed_before_and_placed_order() -> None:
    perms = torch.tensor([[[1, 2, 0]]])
    mask = placed_before(perms)
    assert mask[0, 0].int().tolist() == [[0, 0, 0], [0, 1, 0], [0, 1, 1]]
    steps = torch.log(torch.tensor([[[[0.2, 0.5, 0.3], [0.4, 0.0, 0.6], [1.0, 0.0, 0.0]]]]))
    torch.testing.assert_close(
        placed_order_logprobs(steps, perms), torch.log(torch.tensor([[[0.5, 0.6, 1.0]]]))
    )


def test_choose_greedy_and_never_picks_masked() -> None:
    logp = masked_log_softmax(torch.tensor([[5.0, 1.0, 0.0]]), torch.tensor([[True, False, False]]))
    assert choose(logp, 0.0).item() == 1
    torch.manual_seed(0)
    picks = torch.stack([choose(logp, 2.0) for _ in range(200)])
    assert set(picks.flatten().tolist()) == {1, 2}


def test_decode_permutations_feeds_back_the_previous_pick_and_the_placed_mask() -> None:
    scores = torch.tensor([[[0.0, 3.0, 1.0, 2.0]], [[4.0, 1.0, 2.0, 3.0]]])  # [B=2, G=1, K=4]
    seen: list[tuple[int, list | None, list]] = []

    def step_logprobs(step: int, previous: torch.Tensor | None, placed: torch.Tensor):
        seen.append((step, None if previous is None else previous.tolist(), placed.tolist()))
        return masked_log_softmax(scores, placed)

    perms, steps = decode_permutations(step_logprobs, (2, 1), 4, 0.0, "cpu")
    assert perms.tolist() == [[[1, 3, 2, 0]], [[0, 3, 2, 1]]]
    assert steps.shape == (2, 1, 4, 4)
    assert [s for s, _, _ in seen] == [0, 1, 2, 3]
    assert seen[0][1] is None and seen[1][1] == [[1], [0]] and seen[3][1] == [[2], [2]]
    assert seen[2][2] == [[[False, True, False, True]], [[True, False, False, True]]]
    rollout = rollout_from_steps(perms, steps)
    assert torch.equal(rollout.logprobs, placed_order_logprobs(steps, perms))
    assert torch.all(rollout.logprobs[..., -1] == 0) and rollout.reasoning is None


def test_decode_permutations_draws_one_multinomial_per_step() -> None:
    logits = torch.randn(3, 5)
    torch.manual_seed(7)
    perms, _ = decode_permutations(
        lambda step, previous, placed: masked_log_softmax(logits, placed), (3,), 5, 1.0, "cpu"
    )
    torch.manual_seed(7)
    placed = torch.zeros(3, 5, dtype=torch.bool)
    expected = []
    for _ in range(5):
        pick = choose(masked_log_softmax(logits, placed), 1.0)
        expected.append(pick)
        placed = placed.scatter(-1, pick.unsqueeze(-1), True)
    assert torch.equal(perms, torch.stack(expected, -1))
    assert torch.equal(perms.sort(-1).values, torch.arange(5).expand(3, 5))
