"""``bpr_mf``: BPR matrix factorisation (Rendle et al., 2009) with history fold-in.

Training (in :meth:`BPRMFPolicy.prepare`, seeded): user factors ``P [U, d]``, item factors
``Q [I, d]`` and item biases ``b [I]`` maximise ``log σ(x_ui − x_uj)`` with ``x_ui = b_i + P_u·Q_i``
over the train users' visible interactions ``(u, i)`` (``datamodule.feedback_training_data()``:
val / test users are never seen) and uniformly drawn items ``j``, with L2 regularisation (Adam).

Scoring folds the task's history in, so every user — also val / test users unseen in training — is
handled the same way and only uses interactions before the cut: the user vector is
``p = α (mean_{h ∈ history} Q_h − mean_i Q_i)``, the centred mean of the history items' factors
(the direction BPR's gradient pushes ``P_u`` to), with one scale ``α`` fitted after training by
least squares of the train users' ``P_u`` on their own folded-in vectors. A candidate's score is
``b_i + p·Q_i``; with an empty history it is ``b_i`` (popularity-like).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from flexrec.baselines.base import ScoringPolicy, feedback_data, torch_threads
from flexrec.types import RankingBatch

__all__ = ["BPRMFPolicy"]


class BPRMFPolicy(ScoringPolicy):
    """BPR-MF baseline (see the module docstring).

    Args:
        num_items: item vocabulary size (context; else taken from the training data).
        num_users: user vocabulary size (context; else taken from the training data).
        dim: factor dimension ``d``.
        epochs: passes over the training interactions.
        batch_size: interactions per optimiser step.
        lr: Adam learning rate.
        reg: L2 weight on the factors and biases of each triple.
        min_label: if given, only interactions with a label ≥ this are positives (else all are).
        seed: seed of initialisation and negative sampling.
        num_threads: torch threads while fitting (None: torch's setting); one is fastest for
            these small models, above all on a shared CPU.
        temperature: τ of the softmax over scores.
        trainable: add a trainable per-item residual (see :class:`ScoringPolicy`).
    """

    name = "bpr_mf"

    def __init__(
        self,
        num_items: int | None = None,
        num_users: int | None = None,
        dim: int = 32,
        epochs: int = 10,
        batch_size: int = 4096,
        lr: float = 0.05,
        reg: float = 1e-4,
        min_label: float | None = None,
        seed: int = 0,
        num_threads: int | None = 1,
        temperature: float = 0.1,
        trainable: bool = False,
    ) -> None:
        super().__init__(temperature, trainable, num_items)
        self.num_threads = num_threads
        if dim < 1 or epochs < 0 or batch_size < 1:
            raise ValueError(
                "bpr_mf: dim and batch_size must be positive and epochs non-negative, got "
                f"dim={dim}, batch_size={batch_size}, epochs={epochs}"
            )
        self.dim, self.epochs, self.batch_size = dim, epochs, batch_size
        self.lr, self.reg, self.min_label, self.seed = lr, reg, min_label, seed
        self.user_factors = nn.Embedding(num_users or 1, dim).requires_grad_(False)
        self.item_factors = nn.Embedding(num_items or 1, dim).requires_grad_(False)
        self.item_bias = nn.Embedding(num_items or 1, 1).requires_grad_(False)
        self.register_buffer("alpha", torch.ones(()))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`prepare`) has run, also in a loaded checkpoint."""
        return bool(self.fitted)

    def prepare(self, datamodule: Any) -> None:
        """Fit on ``datamodule.feedback_training_data()`` unless already fitted."""
        if self.is_fitted:
            return
        data = feedback_data(datamodule)
        self.fit(data.user, data.item, data.label, data.num_users, data.num_items)

    def fit(
        self,
        users: np.ndarray,
        items: np.ndarray,
        labels: np.ndarray | None = None,
        num_users: int | None = None,
        num_items: int | None = None,
    ) -> BPRMFPolicy:
        """Train on interactions (seeded); returns ``self``.

        Args:
            users: ``[N]`` user indices.
            items: ``[N]`` item indices.
            labels: ``[N]`` labels (used with ``min_label``).
            num_users: ``U`` (default: max index + 1, or the constructor's).
            num_items: ``I`` (default: max index + 1, or the constructor's).
        """
        with torch_threads(self.num_threads):
            self._fit(users, items, labels, num_users, num_items)
        return self

    def _fit(
        self,
        users: np.ndarray,
        items: np.ndarray,
        labels: np.ndarray | None,
        num_users: int | None,
        num_items: int | None,
    ) -> None:
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        if labels is not None and self.min_label is not None:
            keep = np.asarray(labels) >= self.min_label
            users, items = users[keep], items[keep]
        if len(users) == 0:
            raise ValueError("bpr_mf: no training interactions")
        n_users = max(num_users or 0, self.user_factors.num_embeddings, int(users.max()) + 1)
        n_items = max(num_items or 0, self.item_factors.num_embeddings, int(items.max()) + 1)
        device = self.item_factors.weight.device
        gen = torch.Generator().manual_seed(self.seed)
        user_w = (torch.randn(n_users, self.dim, generator=gen) * 0.1).requires_grad_()
        item_w = (torch.randn(n_items, self.dim, generator=gen) * 0.1).requires_grad_()
        bias_w = torch.zeros(n_items, 1, requires_grad=True)
        params = [user_w, item_w, bias_w]
        opt = torch.optim.Adam(params, lr=self.lr)
        u_all, i_all = torch.from_numpy(users), torch.from_numpy(items)
        n = len(u_all)
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=gen)
            negatives = torch.randint(0, n_items, (n,), generator=gen)
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                u, i, j = u_all[idx], i_all[idx], negatives[idx]
                pu, qi, qj = user_w[u], item_w[i], item_w[j]
                x = (bias_w[i] - bias_w[j]).squeeze(-1) + (pu * (qi - qj)).sum(-1)
                penalty = pu.square().sum(-1) + qi.square().sum(-1) + qj.square().sum(-1)
                penalty = penalty + bias_w[i].square().squeeze(-1) + bias_w[j].square().squeeze(-1)
                loss = -nn.functional.logsigmoid(x).mean() + self.reg * penalty.mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            self.user_factors = nn.Embedding.from_pretrained(user_w.detach()).to(device)
            self.item_factors = nn.Embedding.from_pretrained(item_w.detach()).to(device)
            self.item_bias = nn.Embedding.from_pretrained(bias_w.detach()).to(device)
            # alpha: least squares of the train users' P_u on their folded-in vectors
            seen = torch.unique(u_all)
            sums = torch.zeros(n_users, self.dim).index_add_(0, u_all, item_w.detach()[i_all])
            counts = torch.bincount(u_all, minlength=n_users).clamp_min(1).unsqueeze(-1)
            folded = (sums / counts)[seen] - item_w.detach().mean(0)
            num = (user_w.detach()[seen] * folded).sum()
            den = folded.square().sum().clamp_min(1e-12)
            self.alpha = (num / den).reshape(()).to(device)
            self.fitted = torch.ones((), dtype=torch.bool, device=device)

    def user_vectors(self, history_ids: Tensor) -> Tensor:
        """Folded-in user vectors ``[B, d]`` from ``history_ids [B, L]`` (``-1`` pad)."""
        q = self.item_factors.weight
        ids = history_ids.to(q.device)
        valid = (ids >= 0) & (ids < q.shape[0])
        hist = q[ids.clamp(0, q.shape[0] - 1)] * valid.unsqueeze(-1)
        n = valid.sum(-1, keepdim=True)
        centred = hist.sum(1) / n.clamp_min(1) - q.mean(0)
        return torch.where(n > 0, self.alpha * centred, torch.zeros_like(centred))

    def scores(self, batch: RankingBatch) -> Tensor:
        """``b_i + p·Q_i`` of every candidate ``[B, K]`` (see the module docstring)."""
        if not self.is_fitted:
            raise RuntimeError("bpr_mf is not fitted: call prepare(datamodule) or fit(...)")
        q = self.item_factors.weight
        ids = batch.candidate_ids.to(q.device)
        known = (ids >= 0) & (ids < q.shape[0])
        safe = ids.clamp(0, q.shape[0] - 1)
        history = batch.history_ids
        if history is None:
            history = torch.full((batch.batch_size, 1), -1, dtype=torch.long)
        p = self.user_vectors(history)
        s = self.item_bias.weight[safe].squeeze(-1) + (q[safe] * p.unsqueeze(1)).sum(-1)
        return torch.where(known, s, torch.zeros_like(s)).to(batch.candidate_ids.device)
