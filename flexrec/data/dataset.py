"""The normalised in-memory representation every loader returns: :class:`InteractionData`.

Users and items are contiguous integer indices (``0..U-1`` / ``0..I-1``); the raw identifiers of the
source files are kept in ``user_ids`` / ``item_ids``. Interactions are numpy arrays sorted by
``(user, timestamp)`` (stable, so equal timestamps keep file order); a user's rows are
``user_offsets[u]:user_offsets[u + 1]``. A ``(user, item)`` pair occurs at most once (loaders keep the
last interaction of a repeated pair).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from flexrec.errors import DataError

__all__ = ["DAY", "InteractionData", "LabelScale", "split_year"]

DAY = 86_400
_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")


@dataclass(frozen=True)
class LabelScale:
    """How to read a dataset's labels.

    Attributes:
        minimum: smallest possible label.
        maximum: label at which the interest gain saturates (EVALUATION.md §3 ``max``).
        threshold: interest threshold τ (labels ≤ τ have zero interest gain).
        relevant: labels ≥ this are interest-relevant (Recall / MRR).
        name: what the label is, for prompts (``rating``, ``watch ratio``).
        rule: how the thresholds were chosen: ``fixed`` (the documented scale of a named
            dataset), ``explicit`` (given by the user), or a rule of :mod:`flexrec.data.labels`
            (``range``, ``quantile``, ``interacted``: a log of interactions without strengths,
            whose tasks need sampled non-interacted candidates).
    """

    minimum: float
    maximum: float
    threshold: float
    relevant: float
    name: str = "rating"
    rule: str = "fixed"


MOVIELENS_SCALE = LabelScale(minimum=0.5, maximum=5.0, threshold=3.0, relevant=4.0, name="rating")
KUAIREC_SCALE = LabelScale(
    minimum=0.0, maximum=3.0, threshold=1.0, relevant=2.0, name="watch ratio"
)


def split_year(title: str) -> tuple[str, int]:
    """``"Toy Story (1995)"`` → ``("Toy Story", 1995)``; ``-1`` when no trailing year.

    Examples:
        >>> split_year("Seven (Se7en) (1995) ")
        ('Seven (Se7en)', 1995)

        Examples:
            >>> split_year("Unknown")
            ('Unknown', -1)
    """
    match = _YEAR.search(title)
    if match is None:
        return title.strip(), -1
    return title[: match.start()].strip(), int(match.group(1))


@dataclass(frozen=True, eq=False)
class InteractionData:
    """Interactions plus item and user side information of one dataset.

    Attributes:
        name: dataset name (``ml-100k``, ``kuairec-sim``, ...).
        user: ``[N]`` int64 user index of each interaction.
        item: ``[N]`` int64 item index.
        label: ``[N]`` float64 label (rating / watch ratio).
        timestamp: ``[N]`` int64 seconds since the epoch.
        user_ids: ``[U]`` raw user identifiers.
        item_ids: ``[I]`` raw item identifiers.
        titles: ``[I]`` object array of titles (year removed; ``""`` when unknown).
        years: ``[I]`` int64 release year, ``-1`` unknown.
        item_categories: ``[I, C]`` bool multi-hot of each item's categories.
        categories: the ``C`` category names.
        item_text: ``[I]`` object array of extra item text (caption, tags), may be ``""``.
        scale: how to read labels (thresholds of the needs).
        trend_window: default window of ``trend_promotion`` in ``time_unit`` (30 days / 24 h).
        user_features: optional table with one row per user index.
        item_daily: optional per-item daily counts (``item, day, count``; day = epoch day).
        provenance: where the data came from (files, checksums, generator seed, ...).
        time_unit: ``seconds``, or ``rows`` when the source had no timestamps and ``timestamp``
            is the row number (row order stands in for time: histories, cuts, trend windows).
    """

    name: str
    user: np.ndarray
    item: np.ndarray
    label: np.ndarray
    timestamp: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    titles: np.ndarray
    years: np.ndarray
    item_categories: np.ndarray
    categories: tuple[str, ...]
    item_text: np.ndarray
    scale: LabelScale
    trend_window: int = 30 * DAY
    user_features: pd.DataFrame | None = None
    item_daily: pd.DataFrame | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    time_unit: str = "seconds"

    @property
    def num_users(self) -> int:
        """``U``."""
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        """``I``."""
        return len(self.item_ids)

    @property
    def num_interactions(self) -> int:
        """``N``."""
        return len(self.user)

    @property
    def user_offsets(self) -> np.ndarray:
        """``[U + 1]`` start of each user's rows in the (user, time)-sorted arrays."""
        return np.searchsorted(self.user, np.arange(self.num_users + 1), side="left")

    def summary(self) -> str:
        """One line: name and counts."""
        return (
            f"{self.name}: {self.num_interactions:,} interactions, {self.num_users:,} users, "
            f"{self.num_items:,} items, {len(self.categories)} categories"
        )

    @classmethod
    def build(
        cls,
        name: str,
        interactions: pd.DataFrame,
        items: pd.DataFrame,
        categories: Sequence[str],
        scale: LabelScale,
        **extra: Any,
    ) -> InteractionData:
        """Index raw identifiers, attach item side information and sort.

        Args:
            name: dataset name.
            interactions: columns ``user, item, label, timestamp`` (raw ids, numeric label/time).
            items: columns ``item`` (raw id), ``title``, ``year``, ``categories`` (lists of indices
                into ``categories``) and ``text``; items that only appear in ``interactions`` are
                added with their raw id as title.
            categories: category names.
            scale: label scale.
            **extra: further :class:`InteractionData` fields (``trend_window``, ``provenance``,
                ``user_features`` indexed by raw user id, ``item_daily`` with raw item ids).

        Returns:
            The dataset, interactions sorted by (user, timestamp), one row per (user, item).
        """
        if interactions.empty:
            raise DataError(f"{name}: no interactions")
        items = items.drop_duplicates("item", keep="first")
        missing = pd.Index(interactions["item"].unique()).difference(pd.Index(items["item"]))
        if len(missing):
            filler = pd.DataFrame(
                {
                    "item": missing,
                    "title": [str(m) for m in missing],
                    "year": -1,
                    "categories": [[] for _ in missing],
                    "text": "",
                }
            )
            items = pd.concat([items, filler], ignore_index=True)
        item_ids = items["item"].to_numpy()
        item_index = pd.Index(item_ids)
        user_ids = np.sort(interactions["user"].unique())
        user = pd.Index(user_ids).get_indexer(interactions["user"]).astype(np.int64)
        item = item_index.get_indexer(interactions["item"]).astype(np.int64)
        label = interactions["label"].to_numpy(np.float64)
        timestamp = interactions["timestamp"].to_numpy(np.int64)
        order = np.lexsort((timestamp, user))
        user, item, label, timestamp = user[order], item[order], label[order], timestamp[order]
        pair = user * len(item_ids) + item
        _, last = np.unique(pair[::-1], return_index=True)
        keep = np.sort(len(pair) - 1 - last)
        multi_hot = np.zeros((len(item_ids), len(categories)), dtype=bool)
        for row, cats in enumerate(items["categories"]):
            multi_hot[row, list(cats)] = True
        user_features = extra.pop("user_features", None)
        if user_features is not None:
            user_features = user_features.reindex(user_ids).reset_index(drop=True)
        item_daily = extra.pop("item_daily", None)
        if item_daily is not None:
            item_daily = item_daily.assign(item=item_index.get_indexer(item_daily["item"]))
            item_daily = item_daily[item_daily["item"] >= 0].reset_index(drop=True)
        return cls(
            name=name,
            user=user[keep],
            item=item[keep],
            label=label[keep],
            timestamp=timestamp[keep],
            user_ids=user_ids,
            item_ids=item_ids,
            titles=items["title"].astype(str).to_numpy(object),
            years=items["year"].to_numpy(np.int64),
            item_categories=multi_hot,
            categories=tuple(categories),
            item_text=items["text"].fillna("").astype(str).to_numpy(object),
            scale=scale,
            user_features=user_features,
            item_daily=item_daily,
            **extra,
        )
