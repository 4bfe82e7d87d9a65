"""Core types: placed-order gathering and batch selection."""

from __future__ import annotations

import torch

from flexrec.types import RankingBatch, Rollout, gather_placed


def _batch() -> RankingBatch:
    return RankingBatch(
        candidate_ids=torch.tensor([[5, 6, 7], [8, 9, 10], [11, 12, 13]]),
        gains=torch.tensor([[0.0, 1.0, 0.5], [1.0, 0.0, 0.0], [0.2, 0.3, 0.4]]),
        observed=torch.ones(3, 3, dtype=torch.bool),
        relevant=torch.tensor([[False, True, False], [True, False, False], [False, False, True]]),
        need=["a", "b", "c"],
        instruction=["ia", "ib", "ic"],
        candidate_text=[["x"] * 3, ["y"] * 3, ["z"] * 3],
    )


def test_gather_placed_matches_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(4, 6, generator=gen)
    perms = torch.stack(
        [torch.stack([torch.randperm(6, generator=gen) for _ in range(3)]) for _ in range(4)]
    )
    out = gather_placed(values, perms)
    for b in range(4):
        for g in range(3):
            for k in range(6):
                assert out[b, g, k] == values[b, perms[b, g, k]]


def test_gather_placed_trailing_dims() -> None:
    values = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    perms = torch.tensor([[[2, 0, 1]], [[1, 2, 0]]])
    out = gather_placed(values, perms)
    assert out.shape == (2, 1, 3, 2)
    assert torch.equal(out[1, 0, 0], values[1, 1])


def test_select_and_shapes() -> None:
    batch = _batch()
    assert (batch.batch_size, batch.num_candidates) == (3, 3)
    sub = batch.select([2, 0])
    assert sub.need == ["c", "a"] and sub.instruction == ["ic", "ia"]
    assert torch.equal(sub.candidate_ids, torch.tensor([[11, 12, 13], [5, 6, 7]]))
    assert sub.candidate_text == [["z"] * 3, ["x"] * 3]
    assert sub.meta == [] and sub.history_ids is None
    assert batch.select(slice(1, 2)).need == ["b"]
    assert batch.select(torch.tensor([1])).gains.tolist() == [[1.0, 0.0, 0.0]]


def test_rollout_select_keeps_every_field_aligned() -> None:
    perms = torch.tensor([[[0, 1]], [[1, 0]], [[0, 1]]])
    steps = torch.arange(12, dtype=torch.float32).reshape(3, 1, 2, 2)
    rollout = Rollout(perms, -perms.float(), steps, reasoning=[[[1]], [[2, 3]], [[4]]])
    assert (rollout.batch_size, rollout.group_size) == (3, 1)
    sub = rollout.select(torch.tensor([2, 1]))
    assert torch.equal(sub.permutations, perms[[2, 1]])
    assert torch.equal(sub.logprobs, -perms[[2, 1]].float())
    assert torch.equal(sub.step_logprobs, steps[[2, 1]])
    assert sub.reasoning == [[[4]], [[2, 3]]]
    bare = Rollout(perms, perms.float()).select(slice(0, 1))
    assert bare.step_logprobs is None and bare.reasoning is None
    assert bare.permutations.tolist() == [[[0, 1]]]
