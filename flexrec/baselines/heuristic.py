"""Non-learned baselines: rank by one candidate feature computed before each task's cut.

The features (:data:`flexrec.data.features.FEATURE_NAMES`) use only interactions strictly before the
task's cut time, so these baselines respect time. The column is looked up by name in
``datamodule.info.feature_names`` in :meth:`FeaturePolicy.prepare` (default: the built-in column
order), so a data module with other columns works as long as it has the named one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from flexrec.baselines.base import ScoringPolicy, feedback_data
from flexrec.data.features import FEATURE_NAMES
from flexrec.types import RankingBatch

__all__ = ["FeaturePolicy", "ItemMeanPolicy", "PopularityPolicy", "RecentPopularityPolicy"]


class FeaturePolicy(ScoringPolicy):
    """Score = one column of ``candidate_features [B, K, F]``.

    Args:
        feature: the column name (see :data:`~flexrec.data.features.FEATURE_NAMES`); checked
            against the data module's ``info.feature_names`` in :meth:`prepare` (or the built-in
            names when scoring unprepared).
        temperature: τ of the softmax over scores.
        trainable: add a trainable per-item residual (see :class:`ScoringPolicy`).
        num_items: item vocabulary size (context).
    """

    name = "feature"
    default_feature = "popularity"

    def __init__(
        self,
        feature: str | None = None,
        temperature: float = 0.1,
        trainable: bool = False,
        num_items: int | None = None,
    ) -> None:
        super().__init__(temperature, trainable, num_items)
        self.feature = feature or self.default_feature
        self.feature_names: tuple[str, ...] = FEATURE_NAMES

    def _check(self, names: tuple[str, ...]) -> None:
        if self.feature not in names:
            raise ValueError(
                f"{self.name}: unknown candidate feature {self.feature!r}; valid: {', '.join(names)}"
            )

    def prepare(self, datamodule: Any) -> None:
        """Resolve the feature column from ``datamodule.info.feature_names`` when it has them."""
        info = getattr(datamodule, "info", None)
        names = tuple(getattr(info, "feature_names", ()) or ())
        if names:
            self._check(names)
            self.feature_names = names

    def scores(self, batch: RankingBatch) -> Tensor:
        """The feature column ``[B, K]``.

        Examples:
            >>> from flexrec.testing.batches import make_batch
            >>> batch = make_batch(batch_size=1, num_candidates=3, num_features=6, seed=0)
            >>> policy = PopularityPolicy()
            >>> torch.equal(policy.scores(batch), batch.candidate_features[..., 0])
            True
        """
        if batch.candidate_features is None:
            raise ValueError(f"{self.name} needs batch.candidate_features")
        self._check(self.feature_names)
        column = self.feature_names.index(self.feature)
        if batch.candidate_features.shape[-1] <= column:
            raise ValueError(
                f"{self.name}: candidate_features has F={batch.candidate_features.shape[-1]}, "
                f"column {self.feature!r} is {column}"
            )
        return batch.candidate_features[..., column]


class PopularityPolicy(FeaturePolicy):
    """``popularity``: most interacted-with items first.

    Args:
        source: ``feature`` (default): the ``popularity`` feature, i.e. ``log1p`` of the item's
            interaction count before each task's cut (respects time); ``train_counts``: the
            item's interaction count among the train users' visible interactions (all times; the
            classic but time-leaky variant), fitted in :meth:`prepare`.
        temperature: τ of the softmax over scores.
        trainable: add a trainable per-item residual (see :class:`ScoringPolicy`).
        num_items: item vocabulary size (context).
    """

    name = "popularity"
    default_feature = "popularity"

    def __init__(
        self,
        source: str = "feature",
        temperature: float = 0.1,
        trainable: bool = False,
        num_items: int | None = None,
    ) -> None:
        super().__init__(None, temperature, trainable, num_items)
        if source not in ("feature", "train_counts"):
            raise ValueError(f"source must be 'feature' or 'train_counts', got {source!r}")
        self.source = source
        self.register_buffer("counts", torch.zeros(0), persistent=False)

    def prepare(self, datamodule: Any) -> None:
        """Resolve the feature column, or count the train users' interactions per item."""
        super().prepare(datamodule)
        if self.source == "train_counts" and self.counts.numel() == 0:
            data = feedback_data(datamodule)
            counts = np.bincount(data.item, minlength=data.num_items).astype(np.float32)
            self.counts = torch.from_numpy(np.log1p(counts)).to(self.counts.device)

    def scores(self, batch: RankingBatch) -> Tensor:
        """The popularity feature, or ``log1p(train count)`` of each candidate ``[B, K]``."""
        if self.source == "feature":
            return super().scores(batch)
        if self.counts.numel() == 0:
            raise RuntimeError("popularity(source='train_counts') is not prepared: call prepare()")
        ids = batch.candidate_ids.to(self.counts.device)
        known = (ids >= 0) & (ids < self.counts.numel())
        values = self.counts[ids.clamp(0, self.counts.numel() - 1)]
        return torch.where(known, values, torch.zeros_like(values)).to(batch.candidate_ids.device)


class RecentPopularityPolicy(FeaturePolicy):
    """``recent_popularity``: most interacted-with items in the need's trend window before the cut.

    Args:
        temperature: τ of the softmax over scores.
        trainable: add a trainable per-item residual (see :class:`ScoringPolicy`).
        num_items: item vocabulary size (context).
    """

    name = "recent_popularity"
    default_feature = "recent_popularity"

    def __init__(
        self, temperature: float = 0.1, trainable: bool = False, num_items: int | None = None
    ) -> None:
        super().__init__(None, temperature, trainable, num_items)


class ItemMeanPolicy(FeaturePolicy):
    """``item_mean``: highest mean label before the cut first (shrunk towards τ; EVALUATION.md §5).

    Args:
        temperature: τ of the softmax over scores.
        trainable: add a trainable per-item residual (see :class:`ScoringPolicy`).
        num_items: item vocabulary size (context).
    """

    name = "item_mean"
    default_feature = "mean_label"

    def __init__(
        self, temperature: float = 0.1, trainable: bool = False, num_items: int | None = None
    ) -> None:
        super().__init__(None, temperature, trainable, num_items)
