"""``pairwise_logistic``: hand-computed values, a slow loop reference, and training with it."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from flexrec.errors import ConfigError
from flexrec.module import FlexRecModule
from flexrec.policies.base import masked_log_softmax, placed_before
from flexrec.registry import registries
from flexrec.testing.synthetic import SyntheticDataModule
from flexrec_example import PairwiseLogistic
from flexrec_example.objectives import pairwise_logistic_loss, ranked_pairs


def test_three_candidates_by_hand() -> None:
    # gains (2, 0, 1), target ranking (0, 2, 1); step 0: all three available, pairs (0>1), (0>2),
    # (2>1); step 1: candidates 2 and 1, pair (2>1); step 2: one candidate, no pair.
    p0 = torch.tensor([0.5, 0.2, 0.3])
    p1 = torch.tensor([0.0, 0.4, 0.6])
    steps = torch.stack([p0, p1, torch.tensor([0.0, 1.0, 0.0])]).log().view(1, 1, 3, 3)
    perms, gains = torch.tensor([[[0, 2, 1]]]), torch.tensor([[[2.0, 0.0, 1.0]]])
    assert ranked_pairs(perms, gains).sum() == 4
    expected = (
        math.log1p(0.2 / 0.5)
        + math.log1p(0.3 / 0.5)
        + math.log1p(0.2 / 0.3)
        + math.log1p(0.4 / 0.6)
    ) / 4
    assert pairwise_logistic_loss(steps, perms, gains).item() == pytest.approx(expected, rel=1e-6)


def test_gradient_matches_a_slow_loop_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    b, k, sigma = 2, 4, 1.5
    scores = torch.randn(b, 1, k, k, generator=gen, dtype=torch.float64, requires_grad=True)
    perms = torch.stack([torch.randperm(k, generator=gen) for _ in range(b)]).view(b, 1, k)
    steps = masked_log_softmax(scores, placed_before(perms))
    gains = torch.tensor([[[1.0, 0.0, 2.0, 0.0]], [[0.5, 0.5, 0.0, 3.0]]], dtype=torch.float64)
    fast = pairwise_logistic_loss(steps, perms, gains, sigma)
    total, count = scores.new_zeros(()), 0
    for task in range(b):
        for step in range(k):
            available = [int(c) for c in perms[task, 0, step:]]
            for i in available:
                for j in available:
                    if gains[task, 0, i] > gains[task, 0, j]:
                        diff = steps[task, 0, step, i] - steps[task, 0, step, j]
                        total = total + torch.log1p(torch.exp(-sigma * diff))
                        count += 1
    slow = total / count
    torch.testing.assert_close(fast, slow)
    (grad_fast,) = torch.autograd.grad(fast, scores, retain_graph=True)
    (grad_slow,) = torch.autograd.grad(slow, scores)
    torch.testing.assert_close(grad_fast, grad_slow)


def test_registered_and_checked() -> None:
    objective = registries.objective.build({"name": "pairwise_logistic", "args": {"sigma": 0.5}})
    assert isinstance(objective, PairwiseLogistic) and objective.sigma == 0.5
    with pytest.raises(ConfigError, match="sigma must be > 0"):
        registries.objective.build({"name": "pairwise_logistic", "args": {"sigma": 0.0}})


def test_trains_the_native_policy_through_flexrec() -> None:
    L.seed_everything(0)
    data = SyntheticDataModule(num_train=256, num_val=128, num_candidates=8, batch_size=32)
    module = FlexRecModule(
        policy={"name": "native", "args": {"dim": 32}}, objective="pairwise_logistic", lr=3e-3
    )
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, data)
    assert {"train/loss", "train/pairs"} <= set(trainer.callback_metrics)
    (metrics,) = trainer.validate(module, data, verbose=False)
    for need in data.needs:
        learned, random = metrics[f"val/ndcg@5/{need}"], metrics[f"val_random/ndcg@5/{need}"]
        assert learned > random + 0.1, (need, learned, random)
