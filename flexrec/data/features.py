"""Candidate statistics computed only from interactions strictly before each task's cut time.

All look-ups are vectorised: interactions are sorted by ``(item, time)`` once, and the number (and
label sum) of an item's interactions before ``t`` is a ``searchsorted`` on the combined key
``item · 2⁴² + (t − t_min)``.

Feature columns of ``candidate_features [T, K, F]`` (:data:`FEATURE_NAMES`, all in ``[0, 1]``):

0. ``popularity``: ``log1p(count before t) / log1p(num_users)``.
1. ``mean_label``: mean visible label before t shrunk towards τ with 5 pseudo-counts, min–max scaled.
2. ``recent_popularity``: ``log1p(count in the need's trend window before t) / log1p(num_users)``.
3. ``trend``: percentile of that recent count among the task's candidates.
4. ``novelty``: share of the candidate's categories absent from the history's categories.
5. ``history_affinity``: share of history items sharing at least one category with the candidate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from flexrec.data.dataset import InteractionData
from flexrec.needs.functional import novelty, percentile

__all__ = ["FEATURE_NAMES", "ItemClock", "candidate_features"]

FEATURE_NAMES = (
    "popularity",
    "mean_label",
    "recent_popularity",
    "trend",
    "novelty",
    "history_affinity",
)
TREND, NOVELTY = 3, 4
_SHIFT = np.int64(1) << np.int64(42)
_PRIOR = 5.0


@dataclass
class ItemClock:
    """Per-item, time-sorted interaction counts and visible-label sums.

    Args:
        data: the dataset.
        visible: ``[N]`` bool, whether each interaction's label may be used (sparse training hides
            some); counts always use every interaction.
    """

    data: InteractionData
    visible: np.ndarray

    def __post_init__(self) -> None:
        data = self.data
        self.t0 = int(data.timestamp.min()) if data.num_interactions else 0
        order = np.lexsort((data.timestamp, data.item))
        self.keys = data.item[order] * _SHIFT + (data.timestamp[order] - self.t0)
        vis = self.visible[order]
        self.label_sum = np.concatenate([[0.0], np.cumsum(np.where(vis, data.label[order], 0.0))])
        self.visible_count = np.concatenate([[0], np.cumsum(vis)])

    def _pos(self, items: np.ndarray, times: np.ndarray) -> np.ndarray:
        offset = np.clip(times - self.t0, 0, None)
        return np.searchsorted(self.keys, items * _SHIFT + offset, side="left")

    def before(self, items: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Counts ``[...]`` and mean visible labels ``[...]`` (NaN if none) strictly before ``times``."""
        pos = self._pos(items, times)
        start = self._pos(items, np.full_like(times, self.t0))
        n_visible = self.visible_count[pos] - self.visible_count[start]
        total = self.label_sum[pos] - self.label_sum[start]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n_visible > 0, total / np.maximum(n_visible, 1), np.nan)
        return pos - start, mean

    def window(self, items: np.ndarray, times: np.ndarray, seconds: int) -> np.ndarray:
        """Interactions in ``[t − seconds, t)``."""
        return self._pos(items, times) - self._pos(items, times - seconds)


def candidate_features(
    data: InteractionData,
    candidates: np.ndarray,
    history: np.ndarray,
    count: np.ndarray,
    mean: np.ndarray,
    recent: np.ndarray,
) -> np.ndarray:
    """Assemble ``[T, K, F]`` float32 features (columns :data:`FEATURE_NAMES`).

    Args:
        data: the dataset (categories, label scale).
        candidates: ``[T, K]`` item indices.
        history: ``[T, L]`` item indices, ``-1`` pad.
        count: ``[T, K]`` interactions before t.
        mean: ``[T, K]`` mean visible label before t (NaN if none).
        recent: ``[T, K]`` interactions in the trend window before t.
    """
    scale = data.scale
    log_users = np.log1p(max(data.num_users, 1))
    n_visible = np.where(np.isnan(mean), 0.0, count)
    shrunk = (np.nan_to_num(mean) * n_visible + _PRIOR * scale.threshold) / (n_visible + _PRIOR)
    span = max(scale.maximum - scale.minimum, 1e-9)
    cats = torch.from_numpy(data.item_categories)
    hist_valid = torch.from_numpy(history >= 0)
    hist_cats = cats[torch.from_numpy(np.maximum(history, 0))] & hist_valid.unsqueeze(-1)
    cand_cats = cats[torch.from_numpy(candidates)]
    shared = torch.einsum("tkc,tlc->tkl", cand_cats.float(), hist_cats.float()) > 0
    n_hist = hist_valid.sum(-1, keepdim=True).clamp_min(1).float()
    affinity = (shared & hist_valid.unsqueeze(1)).sum(-1).float() / n_hist
    columns = [
        torch.from_numpy(np.log1p(count) / log_users).float(),
        torch.from_numpy(np.clip((shrunk - scale.minimum) / span, 0.0, 1.0)).float(),
        torch.from_numpy(np.log1p(recent) / log_users).float(),
        percentile(torch.from_numpy(recent).float()),
        novelty(hist_cats.any(1), cand_cats),
        affinity,
    ]
    return torch.stack(columns, -1).numpy()
