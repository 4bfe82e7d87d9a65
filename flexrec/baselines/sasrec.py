"""``sasrec``: a compact SASRec (Kang & McAuley, 2018) scoring candidates from the task's history.

A maintained implementation (RecBole 1.2.1) resolves with our stack but pulls ``ray`` and pinned
``colorama`` / ``colorlog`` and needs its own dataset files and config, so this is a compact torch
version of the same model:

- input: the last ``max_len`` items, right-aligned (left padding), item embedding (shared with the
  output layer, ``padding_idx`` 0 = ids shifted by one) + learned positional embedding;
- ``num_layers`` pre-norm transformer blocks with causal self-attention; padded positions attend
  only to themselves and are never attended to;
- training (in :meth:`SASRecPolicy.prepare`, seeded): every train user's time-ordered visible
  interactions (``datamodule.feedback_training_data()``, whose rows keep the data's
  ``(user, time)`` order) are cut into windows of ``max_len + 1`` items; at each position the
  output ``h_t`` scores the next item against one uniformly drawn negative with binary
  cross-entropy on ``h_t·E_next`` and ``h_t·E_neg``;
- scoring: ``h`` at the last history position dotted with each candidate's embedding. Only the
  task's history (before its cut) is used, so val / test users need no training data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from flexrec.baselines.base import ScoringPolicy, feedback_data, torch_threads
from flexrec.types import RankingBatch

__all__ = ["SASRecNet", "SASRecPolicy", "training_windows"]


def training_windows(users: np.ndarray, items: np.ndarray, max_len: int) -> np.ndarray:
    """Cut each user's item sequence into windows of ``max_len + 1`` items, right-aligned.

    Args:
        users: ``[N]`` user index per interaction, rows grouped by user in time order.
        items: ``[N]`` item index per interaction.
        max_len: input length; windows hold ``max_len + 1`` items (inputs and next-item targets).

    Returns:
        ``[W, max_len + 1]`` int64 item ids shifted by one (``0`` = padding on the left); the last
        window of a user ends at their last interaction, earlier ones overlap by one item.

    Examples:
        >>> training_windows(np.array([0, 0, 0, 1, 1]), np.array([5, 6, 7, 8, 9]), 2).tolist()
        [[6, 7, 8], [0, 9, 10]]
    """
    width = max_len + 1
    out = []
    order = np.argsort(users, kind="stable")
    users, items = users[order], items[order] + 1
    bounds = np.flatnonzero(np.diff(users)) + 1
    for seq in np.split(items, bounds):
        end = len(seq)
        while end > 1:
            chunk = seq[max(0, end - width) : end]
            out.append(np.pad(chunk, (width - len(chunk), 0)))
            end -= max_len
    if not out:
        return np.zeros((0, width), dtype=np.int64)
    return np.stack(out).astype(np.int64)


class SASRecNet(nn.Module):
    """The SASRec network: shifted item ids ``[N, T]`` (``0`` pad) → hidden states ``[N, T, d]``.

    Args:
        num_items: item vocabulary size (the embedding has ``num_items + 1`` rows).
        max_len: ``T``, the longest input.
        dim: hidden size ``d``.
        num_layers: transformer blocks.
        num_heads: attention heads.
        dropout: dropout in training.
    """

    def __init__(
        self,
        num_items: int,
        max_len: int = 50,
        dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 1,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.max_len, self.num_heads = max_len, num_heads
        self.items = nn.Embedding(num_items + 1, dim, padding_idx=0)
        self.positions = nn.Embedding(max_len, dim)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim, num_heads, dim, dropout, batch_first=True, norm_first=True
            )
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, seq: Tensor) -> Tensor:
        """Hidden states ``[N, T, d]`` of right-aligned shifted ids ``seq [N, T]``."""
        t = seq.shape[1]
        pad = seq == 0
        h = self.items(seq) * self.items.embedding_dim**0.5
        h = self.dropout(h + self.positions.weight[self.max_len - t :].unsqueeze(0))
        h = h * (~pad).unsqueeze(-1)
        causal = torch.ones(t, t, dtype=torch.bool, device=seq.device).triu(1)
        blocked = causal.unsqueeze(0) | pad.unsqueeze(1)  # [N, T(query), T(key)]
        eye = torch.eye(t, dtype=torch.bool, device=seq.device).unsqueeze(0)
        mask = (blocked & ~eye).repeat_interleave(self.num_heads, 0)
        for block in self.blocks:
            h = block(h, src_mask=mask) * (~pad).unsqueeze(-1)
        return self.norm(h)


class SASRecPolicy(ScoringPolicy):
    """SASRec baseline (see the module docstring).

    Args:
        num_items: item vocabulary size (context; else taken from the training data).
        max_len: input length ``T`` (longer histories keep their last ``T`` items).
        dim: hidden size.
        num_layers: transformer blocks.
        num_heads: attention heads.
        dropout: dropout in training.
        epochs: passes over the training windows.
        batch_size: windows per optimiser step.
        lr: Adam learning rate.
        min_label: if given, train only on interactions with a label ≥ this (sequences of liked
            items); else on all.
        seed: seed of initialisation, window order, dropout and negative sampling.
        num_threads: torch threads while fitting (None: torch's setting); one is fastest for
            these small models, above all on a shared CPU.
        temperature: τ of the softmax over scores.
        trainable: add a trainable per-item residual (see :class:`ScoringPolicy`).
    """

    name = "sasrec"

    def __init__(
        self,
        num_items: int | None = None,
        max_len: int = 20,
        dim: int = 32,
        num_layers: int = 2,
        num_heads: int = 1,
        dropout: float = 0.2,
        epochs: int = 10,
        batch_size: int = 128,
        lr: float = 1e-3,
        min_label: float | None = None,
        seed: int = 0,
        num_threads: int | None = 1,
        temperature: float = 0.1,
        trainable: bool = False,
    ) -> None:
        super().__init__(temperature, trainable, num_items)
        self.num_threads = num_threads
        if max_len < 1 or dim < 1 or num_heads < 1 or epochs < 0 or batch_size < 1:
            raise ValueError(
                "sasrec: max_len, dim, num_heads and batch_size must be positive and epochs "
                f"non-negative, got max_len={max_len}, dim={dim}, num_heads={num_heads}, "
                f"batch_size={batch_size}, epochs={epochs}"
            )
        if dim % num_heads:
            raise ValueError(f"sasrec: dim={dim} must be divisible by num_heads={num_heads}")
        self.config = {
            "max_len": max_len,
            "dim": dim,
            "num_layers": num_layers,
            "num_heads": num_heads,
            "dropout": dropout,
        }
        self.epochs, self.batch_size, self.lr, self.seed = epochs, batch_size, lr, seed
        self.min_label = min_label
        self.net = self._new_net(num_items or 1)
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def _new_net(self, num_items: int) -> SASRecNet:
        rng_state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)
        try:
            return SASRecNet(num_items, **self.config).requires_grad_(False).eval()
        finally:
            torch.random.set_rng_state(rng_state)

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`prepare`) has run, also in a loaded checkpoint."""
        return bool(self.fitted)

    def train(self, mode: bool = True) -> SASRecPolicy:
        """The network always stays in eval mode (it is only trained in :meth:`fit`)."""
        super().train(mode)
        self.net.eval()
        return self

    def prepare(self, datamodule: Any) -> None:
        """Fit on the train users' time-ordered visible interactions unless already fitted."""
        if self.is_fitted:
            return
        data = feedback_data(datamodule)
        self.fit(data.user, data.item, data.label, data.num_items)

    def fit(
        self,
        users: np.ndarray,
        items: np.ndarray,
        labels: np.ndarray | None = None,
        num_items: int | None = None,
    ) -> SASRecPolicy:
        """Train on interaction sequences (seeded); returns ``self``.

        Args:
            users: ``[N]`` user index per interaction, each user's rows in time order.
            items: ``[N]`` item index per interaction.
            labels: ``[N]`` labels (used with ``min_label``).
            num_items: ``I`` (default: max index + 1, or the constructor's).
        """
        with torch_threads(self.num_threads):
            self._fit(users, items, labels, num_items)
        return self

    def _fit(
        self,
        users: np.ndarray,
        items: np.ndarray,
        labels: np.ndarray | None,
        num_items: int | None,
    ) -> None:
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        if labels is not None and self.min_label is not None:
            keep = np.asarray(labels) >= self.min_label
            users, items = users[keep], items[keep]
        if len(items) == 0:
            raise ValueError("sasrec: no training interactions")
        n_items = max(num_items or 0, self.net.items.num_embeddings - 1, int(items.max()) + 1)
        device = self.net.items.weight.device
        if n_items != self.net.items.num_embeddings - 1:
            self.net = self._new_net(n_items).to(device)
        windows = torch.from_numpy(training_windows(users, items, self.config["max_len"]))
        if len(windows) == 0:
            raise ValueError("sasrec: no user has two or more interactions to learn from")
        gen = torch.Generator().manual_seed(self.seed)
        rng_state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)  # dropout
        net = self.net.requires_grad_(True).train()
        try:
            opt = torch.optim.Adam(net.parameters(), lr=self.lr, betas=(0.9, 0.98))
            for _ in range(self.epochs):
                for idx in torch.randperm(len(windows), generator=gen).split(self.batch_size):
                    w = windows[idx].to(device)
                    inputs, targets = w[:, :-1], w[:, 1:]
                    valid = (targets > 0) & (inputs > 0)
                    negatives = torch.randint(1, n_items + 1, targets.shape, generator=gen)
                    h = net(inputs)
                    pos = (h * net.items(targets)).sum(-1)
                    neg = (h * net.items(negatives.to(device))).sum(-1)
                    bce = nn.functional.binary_cross_entropy_with_logits
                    loss = bce(pos[valid], torch.ones_like(pos[valid])) + bce(
                        neg[valid], torch.zeros_like(neg[valid])
                    )
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        finally:  # also on errors: the global RNG restored, the network frozen again
            torch.random.set_rng_state(rng_state)
            self.net = net.requires_grad_(False).eval()
        self.fitted = torch.ones((), dtype=torch.bool, device=device)

    def scores(self, batch: RankingBatch) -> Tensor:
        """``h_last · E_candidate`` ``[B, K]`` from the task's history (see the module docstring)."""
        if not self.is_fitted:
            raise RuntimeError("sasrec is not fitted: call prepare(datamodule) or fit(...)")
        net = self.net
        device = net.items.weight.device
        rows = net.items.num_embeddings
        b = batch.batch_size
        history = batch.history_ids
        if history is None:
            history = torch.full((b, 1), -1, dtype=torch.long)
        history = history.to(device)
        valid = (history >= 0) & (history < rows - 1)
        # right-align: stable sort puts the padding first and keeps the items' order
        order = torch.argsort(valid.int(), dim=-1, stable=True)
        seq = torch.where(valid, history + 1, 0).gather(1, order)[:, -net.max_len :]
        h = net(seq)[:, -1]  # [B, d]
        ids = batch.candidate_ids.to(device)
        known = (ids >= 0) & (ids < rows - 1)
        emb = net.items(torch.where(known, ids + 1, 0))
        s = (emb * h.unsqueeze(1)).sum(-1)
        return torch.where(known, s, torch.zeros_like(s)).to(batch.candidate_ids.device)
