"""``native``: a small pointer-network policy over item features that trains fast on CPU.

Architecture (all sizes configurable):

- candidate encoder: item id embedding (``num_items`` rows, or ``hash_buckets`` rows with ids
  hashed by modulo when ``num_items`` is unknown; initial std ``item_init_std`` = 0.02) + a
  projection of ``candidate_features [B, K, F]``
  (when ``num_features`` is given) + the need vector + the user vector, followed
  by a small transformer encoder over the ``K`` candidates (no positional encoding: the prompt order
  carries no information);
- need encoder: ``need_encoder="index"`` embeds ``need_index`` (one row per need of the vocabulary:
  a need never trained on keeps its random initial row); ``need_encoder="text"`` embeds the
  instruction itself as the mean of hashed lower-case word embeddings (a bag of words, CRC-32 into
  ``word_buckets`` rows), so paraphrases and unseen needs that share words with the training
  instructions land near them: the cheapest text-conditioned policy, for generalisation tests;
- user encoder: mean over the history items' embeddings plus a projection of their labels
  (``history_ids == -1`` is padding);
- autoregressive pointer decoder: step ``k`` scores candidate ``c`` by ``<q_k, W c> / sqrt(d) +
  b(c)`` with the query ``q_k = tanh(W_q [user + need, mean of the encodings of a_<k, k / K])``, so
  each step is conditioned on the items already placed. :meth:`NativePolicy.log_probs` evaluates all
  ``K`` steps at once (teacher forcing with prefix sums).

pi_ref is a frozen deep copy of the initial network (*convention*), kept as the submodule
``reference`` so it is saved in checkpoints and follows ``.to(device)``; it has
``requires_grad=False`` and stays in eval mode. Optimise :meth:`Policy.trainable_parameters`.
"""

from __future__ import annotations

import copy
import math
import re
import zlib
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flexrec.policies.base import (
    Policy,
    decode_permutations,
    masked_log_softmax,
    placed_before,
    placed_order_logprobs,
    rollout_from_steps,
)
from flexrec.types import RankingBatch, Rollout

__all__ = ["NEED_ENCODERS", "NativePolicy", "PointerNet", "instruction_words"]

NEED_ENCODERS = ("index", "text")
_WORD = re.compile(r"[a-z0-9]+")


def instruction_words(texts: Sequence[str], buckets: int) -> tuple[Tensor, Tensor]:
    """Hashed lower-case words of each text as ``(ids, offsets)`` for :class:`torch.nn.EmbeddingBag`.

    A text without words maps to the single bucket 0 so every row has at least one id. CRC-32
    keeps the hashing identical across processes (Python's ``hash`` is salted).
    """
    ids: list[int] = []
    offsets: list[int] = []
    for text in texts:
        offsets.append(len(ids))
        words = _WORD.findall(text.lower()) or [""]
        ids.extend(zlib.crc32(w.encode()) % buckets for w in words)
    return torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)


def _check_positive(**values: int | None) -> None:
    for key, value in values.items():
        if value is not None and value < 1:
            raise ValueError(f"{key} must be a positive integer (or None), got {value}")


class PointerNet(nn.Module):
    """The pointer network of :class:`NativePolicy` (see the module docstring).

    Args:
        num_items: item vocabulary size, or None to hash ids into ``hash_buckets`` rows.
        num_features: candidate feature dimension ``F``, or None to ignore ``candidate_features``.
        num_needs: need vocabulary size, or None for 16 hashed rows.
        dim: model width ``d``.
        num_layers: transformer encoder layers over the candidates.
        num_heads: attention heads.
        hash_buckets: id embedding rows when ``num_items`` is None.
        dropout: dropout in the encoder.
        need_encoder: ``index`` (embed ``need_index``) or ``text`` (bag of hashed instruction
            words).
        word_buckets: word embedding rows of the ``text`` need encoder.
        item_init_std: standard deviation of the initial item id embeddings (default 0.02, as
            in BERT/GPT; PyTorch's ``nn.Embedding`` default is 1). Items seen rarely or never in
            training keep their initial vector, so a large one is pure noise added to their
            features: ``benchmarks/interest_gap.yaml`` measured +0.03 to +0.14 validation NDCG@5
            for 0.02 over 1.0.
    """

    def __init__(
        self,
        num_items: int | None = None,
        num_features: int | None = None,
        num_needs: int | None = None,
        dim: int = 64,
        num_layers: int = 1,
        num_heads: int = 4,
        hash_buckets: int = 4096,
        dropout: float = 0.0,
        need_encoder: str = "index",
        word_buckets: int = 1024,
        item_init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if need_encoder not in NEED_ENCODERS:
            raise ValueError(
                f"need_encoder must be one of {list(NEED_ENCODERS)}, got {need_encoder!r}"
            )
        self.dim = dim
        self.num_features = num_features
        self.need_encoder = need_encoder
        self.item_embedding = nn.Embedding(num_items or hash_buckets, dim)
        if item_init_std != 1.0:  # nn.Embedding already drew N(0, 1): rescale, no new draws
            with torch.no_grad():
                self.item_embedding.weight.mul_(item_init_std)
        if need_encoder == "index":
            self.need_embedding = nn.Embedding(num_needs or 16, dim)
        else:
            self.word_embedding = nn.EmbeddingBag(word_buckets, dim, mode="mean")
        self.feature_proj = nn.Linear(num_features, dim) if num_features else None
        self.label_proj = nn.Linear(1, dim)
        layer = nn.TransformerEncoderLayer(
            dim, num_heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.query = nn.Linear(2 * dim + 1, dim)
        self.key = nn.Linear(dim, dim)
        self.bias = nn.Linear(dim, 1)

    def _embed_items(self, ids: Tensor) -> Tensor:
        return self.item_embedding(ids.clamp_min(0) % self.item_embedding.num_embeddings)

    def _context(self, batch: RankingBatch) -> Tensor:
        """User + need vector ``[B, d]``."""
        b = batch.batch_size
        device = batch.candidate_ids.device
        ctx = torch.zeros(b, self.dim, device=device)
        if self.need_encoder == "text":
            ids, offsets = instruction_words(batch.instruction, self.word_embedding.num_embeddings)
            ctx = ctx + self.word_embedding(ids.to(device), offsets.to(device))
        elif batch.need_index is not None:
            ctx = ctx + self.need_embedding(batch.need_index % self.need_embedding.num_embeddings)
        if batch.history_ids is not None and batch.history_ids.numel() > 0:
            valid = (batch.history_ids >= 0).unsqueeze(-1).float()
            hist = self._embed_items(batch.history_ids)
            if batch.history_labels is not None:
                labels = torch.nan_to_num(batch.history_labels.float()).unsqueeze(-1)
                hist = hist + self.label_proj(labels)
            ctx = ctx + (hist * valid).sum(1) / valid.sum(1).clamp_min(1.0)
        return ctx

    def encodings(self, batch: RankingBatch) -> tuple[Tensor, Tensor]:
        """Candidate encodings ``[B, K, d]`` and the context vector ``[B, d]``."""
        ctx = self._context(batch)
        h = self._embed_items(batch.candidate_ids) + ctx.unsqueeze(1)
        if self.feature_proj is not None and batch.candidate_features is not None:
            features = batch.candidate_features.float()
            if features.shape[-1] != self.num_features:
                raise ValueError(
                    f"candidate_features has F={features.shape[-1]}, the policy was built with "
                    f"num_features={self.num_features}"
                )
            h = h + self.feature_proj(torch.nan_to_num(features))
        return self.encoder(h), ctx

    def step_scores(
        self, keys: Tensor, biases: Tensor, ctx: Tensor, prefix_mean: Tensor, frac: Tensor
    ) -> Tensor:
        """Scores over candidates for a set of decoding states.

        Args:
            keys: ``[B, K, d]``.
            biases: ``[B, K]``.
            ctx: ``[B, d]``.
            prefix_mean: ``[B, S, d]`` mean encoding of the placed items for ``S`` states.
            frac: ``[S]`` or ``[B, S]`` step index ``k / K`` of each state.

        Returns:
            ``[B, S, K]`` scores.
        """
        b, s, _ = prefix_mean.shape
        frac = frac.expand(b, s).unsqueeze(-1)
        q = torch.tanh(
            self.query(torch.cat([ctx.unsqueeze(1).expand(b, s, -1), prefix_mean, frac], -1))
        )
        return torch.einsum("bsd,bkd->bsk", q, keys) / math.sqrt(self.dim) + biases.unsqueeze(1)


class NativePolicy(Policy):
    """Pointer-network ranking policy over item ids, features, need and history.

    Args:
        num_items: item vocabulary size (context; None = hash ids into ``hash_buckets``).
        num_features: candidate feature dimension (context; None = ignore features).
        num_needs: need vocabulary size (context; None = 16 hashed rows).
        dim: model width.
        num_layers: transformer layers over the candidates.
        num_heads: attention heads.
        hash_buckets: id embedding rows when ``num_items`` is None.
        dropout: encoder dropout.
        need_encoder: ``index`` (a learned row per need) or ``text`` (a bag of hashed words of
            the instruction; generalises to paraphrases and unseen needs through shared words).
        word_buckets: word embedding rows of the ``text`` need encoder.
        item_init_std: standard deviation of the initial item id embeddings (0.02; see
            :class:`PointerNet`).
        seed: if given, the initial weights are drawn from this seed.
    """

    name = "native"

    def __init__(
        self,
        num_items: int | None = None,
        num_features: int | None = None,
        num_needs: int | None = None,
        dim: int = 64,
        num_layers: int = 1,
        num_heads: int = 4,
        hash_buckets: int = 4096,
        dropout: float = 0.0,
        need_encoder: str = "index",
        word_buckets: int = 1024,
        item_init_std: float = 0.02,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        _check_positive(
            dim=dim,
            num_layers=num_layers,
            num_heads=num_heads,
            hash_buckets=hash_buckets,
            word_buckets=word_buckets,
        )
        _check_positive(num_items=num_items, num_features=num_features, num_needs=num_needs)
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not item_init_std >= 0.0:
            raise ValueError(f"item_init_std must be >= 0, got {item_init_std}")
        rng_state = torch.random.get_rng_state()
        if seed is not None:
            torch.manual_seed(seed)
        try:
            self.net = PointerNet(
                num_items,
                num_features,
                num_needs,
                dim,
                num_layers,
                num_heads,
                hash_buckets,
                dropout,
                need_encoder,
                word_buckets,
                item_init_std,
            )
        finally:  # a seeded construction leaves the global RNG as it found it, even on errors
            if seed is not None:
                torch.random.set_rng_state(rng_state)
        self.reference = copy.deepcopy(self.net).requires_grad_(False).eval()

    def train(self, mode: bool = True) -> NativePolicy:
        """Set training mode; pi_ref always stays in eval mode."""
        super().train(mode)
        self.reference.eval()
        return self

    def _decode(
        self, net: PointerNet, batch: RankingBatch, group_size: int, temperature: float
    ) -> Rollout:
        enc, ctx = net.encodings(batch)
        keys, biases = net.key(enc), net.bias(enc).squeeze(-1)
        b, k, d = enc.shape
        g = group_size
        running = torch.zeros(b, g, d, device=enc.device)  # sum of the placed items' encodings

        def step_logprobs(step: int, previous: Tensor | None, placed: Tensor) -> Tensor:
            nonlocal running
            if previous is not None:
                running = running + enc.gather(1, previous.unsqueeze(-1).expand(b, g, d))
            frac = torch.full((1, g), step / k, device=enc.device)
            scores = net.step_scores(keys, biases, ctx, running / max(step, 1), frac)
            return masked_log_softmax(scores, placed)

        permutations, steps = decode_permutations(step_logprobs, (b, g), k, temperature, enc.device)
        return rollout_from_steps(permutations, steps)

    @torch.no_grad()
    def sample(self, batch: RankingBatch, group_size: int, temperature: float = 1.0) -> Rollout:
        """See :meth:`Policy.sample`."""
        return self._decode(self.net, batch, group_size, temperature)

    @staticmethod
    def _teacher_forced(
        net: PointerNet, batch: RankingBatch, permutations: Tensor
    ) -> tuple[Tensor, Tensor]:
        enc, ctx = net.encodings(batch)
        keys, biases = net.key(enc), net.bias(enc).squeeze(-1)
        b, g, k = permutations.shape
        d = enc.shape[-1]
        placed_enc = enc.gather(1, permutations.reshape(b, g * k, 1).expand(-1, -1, d))
        placed_enc = placed_enc.reshape(b, g, k, d)
        # Exclusive prefix sums, accumulated in the same order as the step-by-step decoder.
        prefix = torch.cat([torch.zeros_like(placed_enc[:, :, :1]), placed_enc[:, :, :-1]], 2)
        prefix = prefix.cumsum(2) / torch.arange(k, device=enc.device).clamp_min(1).view(1, 1, k, 1)
        frac = (torch.arange(k, device=enc.device) / k).repeat(g).unsqueeze(0)
        scores = net.step_scores(keys, biases, ctx, prefix.reshape(b, g * k, d), frac)
        step_logprobs = masked_log_softmax(scores.reshape(b, g, k, k), placed_before(permutations))
        return placed_order_logprobs(step_logprobs, permutations), step_logprobs

    def log_probs(
        self, batch: RankingBatch, permutations: Tensor, *, rollout: Rollout | None = None
    ) -> tuple[Tensor, Tensor]:
        """See :meth:`Policy.log_probs`; all ``K`` steps in one vectorised pass."""
        return self._teacher_forced(self.net, batch, permutations)

    @torch.no_grad()
    def reference_log_probs(
        self, batch: RankingBatch, permutations: Tensor, *, rollout: Rollout | None = None
    ) -> tuple[Tensor, Tensor]:
        """:meth:`log_probs` under the frozen initial network."""
        return self._teacher_forced(self.reference, batch, permutations)
