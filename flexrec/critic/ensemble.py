"""The ``critic``: a deep ensemble of heteroscedastic MLPs over user, item and category features.

Each member maps (user, item) to a Gaussian over the **raw label** (standardised during training):
inputs are a user embedding, an item embedding, a projection of the item's category multi-hot, their
element-wise products (so that matrix-factorisation-like taste × item terms are easy to learn) and
four numbers (shrunk user / item mean label, log user / item counts). Each member is trained with the
Gaussian NLL on the observed training labels, keeping the epoch with the best NLL on a seeded 10 %
validation part. Predictive mean = mean of member means; predictive variance = mean of member
variances + variance of member means (METHOD.md §4). Gain moments per need come from
:meth:`FeedbackModel.predict`.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor, nn

from flexrec.critic.base import FeedbackModel
from flexrec.data.feedback import FeedbackData

__all__ = ["EnsembleCritic", "HeteroscedasticMLP"]

_SHRINK = 5.0


class HeteroscedasticMLP(nn.Module):
    """One ensemble member: ``(user, item)`` → ``(μ, σ²)`` of the standardised label.

    Args:
        num_users: ``U``.
        num_items: ``I``.
        item_categories: ``[I, C]`` bool multi-hot.
        user_stats: ``[U, 2]`` shrunk standardised mean label and scaled log count per user.
        item_stats: ``[I, 2]`` the same per item.
        dim: embedding width ``d``.
        hidden: MLP width.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        item_categories: Tensor,
        user_stats: Tensor,
        item_stats: Tensor,
        dim: int = 16,
        hidden: int = 64,
    ) -> None:
        super().__init__()
        self.register_buffer("categories", item_categories.float())
        self.register_buffer("user_stats", user_stats.float())
        self.register_buffer("item_stats", item_stats.float())
        self.user = nn.Embedding(num_users, dim)
        self.item = nn.Embedding(num_items, dim)
        nn.init.normal_(self.user.weight, std=0.05)
        nn.init.normal_(self.item.weight, std=0.05)
        self.category = nn.Linear(item_categories.shape[1], dim, bias=False)
        width = 5 * dim + user_stats.shape[1] + item_stats.shape[1]
        self.net = nn.Sequential(
            nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU()
        )
        self.head = nn.Linear(hidden, 2)

    def forward(self, users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
        """``[N]`` index tensors → mean ``[N]`` and variance ``[N]``."""
        u, i = self.user(users), self.item(items)
        c = self.category(self.categories[items])
        x = torch.cat(
            [u, i, c, u * i, u * c, self.user_stats[users], self.item_stats[items]], dim=-1
        )
        out = self.head(self.net(x))
        return out[:, 0], nn.functional.softplus(out[:, 1]) + 1e-3


def _stats(index: np.ndarray, label: np.ndarray, n: int, mean: float, std: float) -> Tensor:
    count = np.bincount(index, minlength=n).astype(np.float64)
    total = np.bincount(index, weights=(label - mean) / std, minlength=n)
    shrunk = total / (count + _SHRINK)
    return torch.tensor(np.stack([shrunk, np.log1p(count) / 5.0], 1))


class EnsembleCritic(FeedbackModel):
    """Deep ensemble critic with Gaussian-NLL training (``critic``).

    Args:
        members: ensemble size.
        dim: embedding width.
        hidden: MLP width.
        epochs: maximum training epochs per member.
        batch_size: minibatch size.
        lr: Adam learning rate.
        weight_decay: AdamW weight decay.
        seed: base seed (member ``m`` uses ``seed + m``).
        num_threads: torch threads while fitting (restored afterwards); these small MLPs run
            fastest on one thread and many times slower when threads contend for busy cores.
            None keeps torch's setting.
    """

    name = "critic"

    def __init__(
        self,
        members: int = 4,
        dim: int = 16,
        hidden: int = 64,
        epochs: int = 30,
        batch_size: int = 1024,
        lr: float = 5e-3,
        weight_decay: float = 1e-4,
        seed: int = 0,
        num_threads: int | None = 1,
    ) -> None:
        if members < 1:
            raise ValueError(f"members must be ≥ 1, got {members}")
        self.members, self.dim, self.hidden, self.epochs = members, dim, hidden, epochs
        self.batch_size, self.lr, self.weight_decay, self.seed = batch_size, lr, weight_decay, seed
        self.num_threads = num_threads
        self.models: list[HeteroscedasticMLP] = []

    def fit(self, data: FeedbackData) -> EnsembleCritic:
        """Train every member on the observed labels (best validation-NLL epoch kept)."""
        if len(data) < 2:
            raise ValueError("the critic needs at least 2 observed labels")
        self.needs = dict(data.needs)
        self.mean, self.std = float(data.label.mean()), float(data.label.std() or 1.0)
        user_stats = _stats(data.user, data.label, data.num_users, self.mean, self.std)
        item_stats = _stats(data.item, data.label, data.num_items, self.mean, self.std)
        categories = torch.from_numpy(data.item_categories)
        fit_part, val_part = data.split(0.1, seed=self.seed)
        self.models = []
        threads = torch.get_num_threads()
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        try:
            for m in range(self.members):
                torch.manual_seed(self.seed + m)
                model = HeteroscedasticMLP(
                    data.num_users,
                    data.num_items,
                    categories,
                    user_stats,
                    item_stats,
                    self.dim,
                    self.hidden,
                )
                self.models.append(self._train(model, fit_part, val_part, self.seed + m))
        finally:
            torch.set_num_threads(threads)
        self.is_fitted = True
        return self

    def _tensors(self, data: FeedbackData) -> tuple[Tensor, Tensor, Tensor]:
        y = torch.from_numpy((data.label - self.mean) / self.std).float()
        return torch.from_numpy(data.user), torch.from_numpy(data.item), y

    def _train(
        self, model: HeteroscedasticMLP, fit: FeedbackData, val: FeedbackData, seed: int
    ) -> HeteroscedasticMLP:
        users, items, y = self._tensors(fit)
        v_users, v_items, v_y = self._tensors(val)
        loss_fn = nn.GaussianNLLLoss()
        optim = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(seed)
        best, best_state = float("inf"), copy.deepcopy(model.state_dict())
        for _ in range(self.epochs):
            model.train()
            for idx in torch.randperm(len(y), generator=gen).split(self.batch_size):
                mu, var = model(users[idx], items[idx])
                loss = loss_fn(mu, y[idx], var)
                optim.zero_grad()
                loss.backward()
                optim.step()
            if len(v_y):
                model.eval()
                with torch.no_grad():
                    val_loss = float(loss_fn(*_swap(model(v_users, v_items), v_y)))
                if val_loss < best:
                    best, best_state = val_loss, copy.deepcopy(model.state_dict())
        if len(v_y):
            model.load_state_dict(best_state)
        model.eval()
        return model

    def predict_labels(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble label mean and variance ``[...]`` (original label scale)."""
        shape = np.shape(users)
        u = torch.from_numpy(np.asarray(users, dtype=np.int64).ravel())
        i = torch.from_numpy(np.asarray(items, dtype=np.int64).ravel())
        with torch.no_grad():
            outs = [model(u, i) for model in self.models]
        means = torch.stack([o[0] for o in outs])
        variances = torch.stack([o[1] for o in outs])
        mean = means.mean(0) * self.std + self.mean
        var = (variances.mean(0) + means.var(0, unbiased=False)) * self.std**2
        return mean.double().numpy().reshape(shape), var.double().numpy().reshape(shape)


def _swap(pred: tuple[Tensor, Tensor], y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(μ, σ²), y`` → ``(μ, y, σ²)`` in GaussianNLLLoss's argument order."""
    return pred[0], y, pred[1]
