"""The example components on real flexrec tasks (embedded MovieLens latest-small, ~3 s).

The docstring examples of the plug-in's modules run as doctests (``--doctest-modules`` over
``src/``, see ``pyproject.toml``).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from flexrec.data.datamodule import FlexRecDataModule
from flexrec.registry import registries
from flexrec.types import RankingBatch, Rollout, gather_placed
from flexrec_example.rewards import category_matrix, redundancy


@pytest.fixture(scope="module")
def movielens() -> tuple[FlexRecDataModule, RankingBatch]:
    dm = FlexRecDataModule(
        needs=["hidden_gems", "maximize_interest"],
        num_candidates=8,
        batch_size=6,
        max_train_tasks=12,
    )
    return dm, next(iter(dm.train_dataloader()))


def test_categories_from_the_batch_and_parsed_from_text_match_the_dataset(
    movielens: tuple[FlexRecDataModule, RankingBatch],
) -> None:
    dm, batch = movielens
    assert dm.data is not None and batch.candidate_categories is not None
    given = category_matrix(batch, batch.num_candidates)  # the data module's own tensor
    parsed = category_matrix(replace(batch, candidate_categories=None), batch.num_candidates)
    assert given is not None and parsed is not None
    vocab = sorted(
        {
            c
            for text in batch.candidate_text
            for line in text
            for c in line.split(" | ")[1].split(", ")
        }
        - {"no category"}
    )
    for b in range(batch.batch_size):
        for k, item in enumerate(batch.candidate_ids[b].tolist()):
            truth = {dm.data.categories[c] for c in dm.data.item_categories[item].nonzero()[0]}
            assert {vocab[c] for c in parsed[b, k].nonzero().flatten().tolist()} == truth
            named = {dm.data.categories[c] for c in given[b, k].nonzero().flatten().tolist()}
            assert named == truth


def test_diverse_swap_on_movielens_is_swap_minus_the_redundancy(
    movielens: tuple[FlexRecDataModule, RankingBatch],
) -> None:
    _, batch = movielens
    gen = torch.Generator().manual_seed(0)
    b, k = batch.batch_size, batch.num_candidates
    perms = torch.stack(
        [torch.stack([torch.randperm(k, generator=gen) for _ in range(3)]) for _ in range(b)]
    )
    rollout = Rollout(permutations=perms, logprobs=torch.zeros(b, 3, k))
    swap = registries.reward.build({"name": "swap", "args": {"cutoff": 5}})(batch.gains, rollout)
    diverse = registries.reward.build(
        {"name": "diverse_swap", "args": {"cutoff": 5, "penalty": 0.2}}
    )
    out = diverse(batch.gains, rollout, batch=batch)
    penalty = swap.rewards - out.rewards
    cats = category_matrix(batch, k)
    assert cats is not None
    torch.testing.assert_close(penalty, 0.2 * redundancy(gather_placed(cats, perms), 5).float())
    assert (penalty[..., 0] == 0).all() and (penalty[..., 5:] == 0).all()
    assert penalty.max() > 0  # MovieLens genres do repeat inside the top 5
    torch.testing.assert_close(out.list_metric, swap.list_metric)


def test_hidden_gems_tasks_use_the_need(movielens: tuple[FlexRecDataModule, RankingBatch]) -> None:
    dm, _ = movielens
    need = dm.needs[0]
    assert need.name == "hidden_gems" and need.window == 30 * 86_400  # MovieLens trend window
    tasks = dm.tasks["train"]
    rows = tasks.need == 0
    labels = torch.from_numpy(tasks.true_labels[rows])
    trend = torch.from_numpy(tasks.features[rows][..., 3])
    expected = need.interest(labels) * (1 - trend)
    observed = torch.from_numpy(tasks.observed[rows])
    torch.testing.assert_close(
        torch.from_numpy(tasks.gains[rows]), torch.where(observed, expected, 0.0).float()
    )
