"""A shuffling sampler whose order depends only on (seed, epoch).

Lightning calls ``set_epoch`` on the sampler before every epoch, so a run resumed from a checkpoint
sees exactly the batches an uninterrupted run would have seen (a ``RandomSampler`` with a
generator would not: its state is not checkpointed).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["EpochShuffleSampler"]


class EpochShuffleSampler(Sampler[int]):
    """Shuffle ``range(length)`` with a generator seeded by ``seed`` and the epoch.

    Args:
        length: dataset size.
        seed: base seed.
    """

    def __init__(self, length: int, seed: int = 0) -> None:
        self.length = length
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch``."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=gen).tolist())

    def __len__(self) -> int:
        return self.length
