"""The shared constrained-decoding math."""

from __future__ import annotations

import torch

from flexrec.policies.base import (
    choose,
    masked_log_softmax,
    placed_before,
    placed_order_logprobs,
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
    gen = torch.Generator().manual_seed(0)
    picks = torch.stack([choose(logp, 2.0, gen) for _ in range(200)])
    assert set(picks.flatten().tolist()) == {1, 2}
