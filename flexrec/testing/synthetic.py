"""A small synthetic ranking data module whose right ranking is determined by the need.

Every candidate has ``F`` features drawn uniformly from ``[0, 1)``. Under need ``i`` the gain of a
candidate is its feature ``i`` (so each need asks for a different ranking of the same candidates)
and it is relevant when that feature exceeds ``relevance_threshold``. A policy that ignores the need
is stuck near random for at least one need; one that learns scores near the oracle. Used by the
module's end-to-end tests and handy for checking a new plug-in quickly.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from flexrec.data.sampler import EpochShuffleSampler
from flexrec.errors import ConfigError, check_number
from flexrec.types import DataInfo, RankingBatch

__all__ = ["SyntheticDataModule", "collate_tasks"]

DEFAULT_NEEDS = ("maximize_interest", "explore_new_topics")


def collate_tasks(tasks: list[RankingBatch]) -> RankingBatch:
    """Stack single-task batches (``B = 1`` each) into one batch."""
    first = tasks[0]
    fields: dict[str, object] = {}
    for name, value in vars(first).items():
        if isinstance(value, torch.Tensor):
            fields[name] = torch.cat([getattr(t, name) for t in tasks])
        elif isinstance(value, list):
            fields[name] = [item for t in tasks for item in getattr(t, name)]
        else:
            fields[name] = value
    return RankingBatch(**fields)  # type: ignore[arg-type]


class _Tasks(Dataset[RankingBatch]):
    def __init__(self, batch: RankingBatch) -> None:
        self.batch = batch

    def __len__(self) -> int:
        return self.batch.batch_size

    def __getitem__(self, index: int) -> RankingBatch:
        return self.batch.select([index])


class SyntheticDataModule(L.LightningDataModule):
    """Synthetic need-conditioned ranking tasks (see the module docstring).

    Args:
        num_train: training tasks.
        num_val: validation tasks (also used for test).
        num_candidates: ``K``.
        num_items: item vocabulary; candidate ids are drawn from it.
        needs: need names; need ``i`` ranks by feature ``i`` (``F = len(needs) + 1``, the last
            feature is noise).
        batch_size: tasks per batch.
        relevance_threshold: feature value above which a candidate is relevant.
        seed: seed of the task generation and the shuffling.
    """

    def __init__(
        self,
        num_train: int = 256,
        num_val: int = 64,
        num_candidates: int = 8,
        num_items: int = 500,
        needs: tuple[str, ...] | list[str] = DEFAULT_NEEDS,
        batch_size: int = 16,
        relevance_threshold: float = 0.7,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        for name, low in (("num_train", 1), ("num_val", 1), ("num_candidates", 2)):
            check_number(name, self.hparams[name], minimum=low, integer=True)
        check_number("num_items", num_items, minimum=1, integer=True)
        check_number("batch_size", batch_size, minimum=1, integer=True)
        if not needs:
            raise ConfigError("needs is empty: name at least one need")
        self.needs = tuple(needs)
        num_features = len(self.needs) + 1
        self.info = DataInfo(
            num_items=num_items,
            num_users=1,
            num_features=num_features,
            needs=self.needs,
            feature_names=tuple(f"f{i}" for i in range(num_features)),
        )
        gen = torch.Generator().manual_seed(seed)
        self.train = self._make(num_train, gen)
        self.val = self._make(num_val, gen)

    def _make(self, n: int, gen: torch.Generator) -> RankingBatch:
        hp: Any = self.hparams  # an AttributeDict, typed by Lightning as a plain mapping
        k, f = hp.num_candidates, self.info.num_features
        features = torch.rand(n, k, f, generator=gen)
        need_index = torch.randint(0, len(self.needs), (n,), generator=gen)
        gains = features.gather(2, need_index.view(n, 1, 1).expand(n, k, 1)).squeeze(2)
        items = torch.randint(0, hp.num_items, (n, k), generator=gen)
        need = [self.needs[i] for i in need_index.tolist()]
        return RankingBatch(
            candidate_ids=items,
            gains=gains,
            observed=torch.ones(n, k, dtype=torch.bool),
            relevant=gains > hp.relevance_threshold,
            need=need,
            instruction=[f"Rank by {name.replace('_', ' ')}." for name in need],
            history_ids=torch.full((n, 1), -1, dtype=torch.long),
            history_labels=torch.zeros(n, 1),
            user_ids=torch.zeros(n, dtype=torch.long),
            need_index=need_index,
            labels=gains.clone(),
            candidate_features=features,
            history_text=[[] for _ in range(n)],
            candidate_text=[
                [" ".join(f"f{j}={v:.1f}" for j, v in enumerate(row)) for row in task.tolist()]
                for task in features
            ],
            meta=[{"dataset": "synthetic", "task": i, "user": i} for i in range(n)],
        )

    def train_dataloader(self) -> DataLoader[RankingBatch]:
        """Shuffled training tasks, reproducible per (seed, epoch)."""
        data = _Tasks(self.train)
        hp: Any = self.hparams
        return DataLoader(
            data,
            batch_size=hp.batch_size,
            sampler=EpochShuffleSampler(len(data), hp.seed),
            collate_fn=collate_tasks,
        )

    def val_dataloader(self) -> DataLoader[RankingBatch]:
        """Validation tasks in a fixed order."""
        hp: Any = self.hparams
        return DataLoader(_Tasks(self.val), batch_size=hp.batch_size, collate_fn=collate_tasks)

    def test_dataloader(self) -> DataLoader[RankingBatch]:
        """The validation tasks (the synthetic task has no separate test split)."""
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader[RankingBatch]:
        """The validation tasks."""
        return self.val_dataloader()
