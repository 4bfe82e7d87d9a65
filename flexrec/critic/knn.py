"""Neighbourhood imputers (paper Table 8 ablations): ``user_knn`` and ``item_knn``, variance 0.

Both work on the dense ``U × I`` matrix of observed training labels (fine up to a few tens of
millions of cells; use the critic beyond that). Similarity is the cosine of mean-centred label
vectors over co-observed entries; a prediction is the target's mean plus the similarity-weighted
mean deviation of its ``k`` most similar neighbours that have a label for the pair, falling back to
the mean when no neighbour has one (user mean for ``user_knn``, item mean for ``item_knn``; the
global mean for unseen users / items).
"""

from __future__ import annotations

import numpy as np
import torch

from flexrec.critic.base import FeedbackModel
from flexrec.data.feedback import FeedbackData

__all__ = ["ItemKNN", "UserKNN"]

_CHUNK = 2048
_SHRINK = 5.0


class _KNN(FeedbackModel):
    """Shared machinery; ``_by_user`` picks the side whose rows are neighbours."""

    _by_user: bool = True

    def __init__(self, k: int = 20) -> None:
        if k < 1:
            raise ValueError(f"k must be ≥ 1, got {k}")
        self.k = k

    def fit(self, data: FeedbackData) -> _KNN:
        """Build the centred label matrix of the observed training labels."""
        self.needs = dict(data.needs)
        rows, cols = (data.user, data.item) if self._by_user else (data.item, data.user)
        n_rows, n_cols = (
            (data.num_users, data.num_items) if self._by_user else (data.num_items, data.num_users)
        )
        self.global_mean = float(data.label.mean()) if len(data) else 0.0
        count = np.bincount(rows, minlength=n_rows).astype(np.float64)
        total = np.bincount(rows, weights=data.label, minlength=n_rows)
        self.row_mean = (total + _SHRINK * self.global_mean) / (count + _SHRINK)
        dev = np.zeros((n_rows, n_cols), dtype=np.float32)
        dev[rows, cols] = data.label - self.row_mean[rows]
        mask = np.zeros((n_rows, n_cols), dtype=bool)
        mask[rows, cols] = True
        self.dev, self.mask = torch.from_numpy(dev), torch.from_numpy(mask)
        norm = self.dev.norm(dim=1, keepdim=True).clamp_min(1e-8)
        self.unit = self.dev / norm
        self.is_fitted = True
        return self

    def predict_labels(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean ``[...]`` and zero variance for (user, item) pairs."""
        shape = np.shape(users)
        u, i = np.asarray(users).ravel(), np.asarray(items).ravel()
        target, other = (u, i) if self._by_user else (i, u)
        out = np.empty(len(u), dtype=np.float64)
        for start in range(0, len(u), _CHUNK):
            t = torch.from_numpy(target[start : start + _CHUNK])
            o = torch.from_numpy(other[start : start + _CHUNK])
            sims = self.unit[t] @ self.unit.T  # [Q, R]
            sims[torch.arange(len(t)), t] = 0.0
            has = self.mask[:, o].T  # [Q, R] neighbours with a label for the pair
            weights = torch.where(has, sims, torch.zeros(()))
            top, idx = weights.topk(min(self.k, weights.shape[1]), dim=1)
            top = top.clamp_min(0.0)
            devs = self.dev[idx, o.unsqueeze(1).expand_as(idx)]
            norm = top.sum(1)
            shift = torch.where(norm > 0, (top * devs).sum(1) / norm.clamp_min(1e-8), 0.0)
            out[start : start + len(t)] = self.row_mean[t.numpy()] + shift.double().numpy()
        return out.reshape(shape), np.zeros(shape)


class UserKNN(_KNN):
    """User-based neighbourhood imputation (neighbours: users with a label for the item).

    Args:
        k: neighbours per prediction.
    """

    name = "user_knn"
    _by_user = True


class ItemKNN(_KNN):
    """Item-based neighbourhood imputation (neighbours: items the user labelled).

    Args:
        k: neighbours per prediction.
    """

    name = "item_knn"
    _by_user = False
