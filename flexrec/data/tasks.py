"""Task builder (EVALUATION.md §2): user split, cut points, histories, candidate sets, sparse labels.

A task for user ``u`` at cut time ``t``: history = the user's last ``L`` interactions strictly before
``t``; candidates = the ``K`` earliest interactions at or after ``t`` (true labels), shuffled with a
seeded generator. Train users get up to ``train_cuts_per_user`` distinct cuts (uniform over valid
positions); val / test users the latest cut with ``K`` interactions at or after it (plus
``eval_cuts_per_user - 1`` distinct earlier cuts drawn uniformly, when asked for). Users with
fewer than ``min_history + K`` interactions (after moving each cut back to the first interaction
at its timestamp, so ties never straddle a cut) are skipped (counted in ``TaskSet.skipped_users``).
Each (user, cut) yields one task per need. In sparse mode each label of a train user is kept with
probability ``p`` (one Bernoulli draw per interaction, so a hidden label is hidden everywhere:
candidates, histories and feature statistics).

With ``negatives = n > 0`` only the ``K − n`` earliest interactions at or after ``t`` are
candidates; the other ``n`` are items the user never interacted with (anywhere in the data), drawn
per task with probability proportional to their number of interactions, with label 0 and observed.
An interaction log without strengths (every label 1) needs them: its candidates would otherwise
all be equally good. Popularity-proportional draws keep popularity from giving the interactions
away (uniform draws would mostly be obscure items).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from flexrec.data.dataset import InteractionData
from flexrec.data.features import NOVELTY, TREND, ItemClock, candidate_features
from flexrec.errors import DataError
from flexrec.needs.base import Need, NeedContext, check_need_output

__all__ = ["SPLITS", "TaskSet", "build_tasks", "sample_negatives", "split_users"]

SPLITS = ("train", "val", "test")
EVAL_INSTRUCTIONS = ("canonical", "held_out")


@dataclass
class TaskSet:
    """The tasks of one split, stored column-wise (``T`` tasks).

    Attributes:
        split: ``train`` / ``val`` / ``test``.
        users: ``[T]`` user indices.
        cut: ``[T]`` cut timestamps.
        need: ``[T]`` need indices (into ``need_names``).
        history: ``[T, L]`` item indices, oldest first, ``-1`` pad at the end.
        history_labels: ``[T, L]`` labels (NaN for pad or hidden).
        candidates: ``[T, K]`` item indices in prompt (shuffled) order.
        true_labels: ``[T, K]`` true labels.
        observed: ``[T, K]`` bool.
        gains: ``[T, K]`` need gains of the true labels, 0 where unobserved.
        relevant: ``[T, K]`` bool, False where unobserved.
        features: ``[T, K, F]`` float32 (see :mod:`flexrec.data.features`).
        count, mean_label, recent: ``[T, K]`` raw statistics before t (prompt text).
        instruction: ``T`` instruction strings.
        need_names: the need vocabulary.
        seed: the builder's seed.
        visible: ``[N]`` bool over the dataset's interactions: the label is observed (False only
            for the train users' labels hidden in sparse mode; shared by every split).
        split_users: ``[U_split]`` sorted user indices of the split (including skipped users).
        skipped_users: users without enough interactions.
        sampled: ``[T, K]`` bool, the candidates that are sampled non-interacted items (label 0),
            or None when the tasks have none.
    """

    split: str
    users: np.ndarray
    cut: np.ndarray
    need: np.ndarray
    history: np.ndarray
    history_labels: np.ndarray
    candidates: np.ndarray
    true_labels: np.ndarray
    observed: np.ndarray
    gains: np.ndarray
    relevant: np.ndarray
    features: np.ndarray
    count: np.ndarray
    mean_label: np.ndarray
    recent: np.ndarray
    instruction: list[str]
    need_names: tuple[str, ...]
    seed: int
    visible: np.ndarray
    split_users: np.ndarray
    skipped_users: int = 0
    sampled: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.users)


def split_users(
    num_users: int, seed: int, fractions: Sequence[float] = (0.8, 0.1, 0.1)
) -> dict[str, np.ndarray]:
    """Seeded train / val / test partition of ``range(num_users)`` (sorted index arrays)."""
    perm = np.random.default_rng([seed, 11]).permutation(num_users)
    n_train = round(fractions[0] * num_users)
    n_val = round(fractions[1] * num_users)
    parts = (perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :])
    return {name: np.sort(part) for name, part in zip(SPLITS, parts, strict=True)}


def _cuts(
    data: InteractionData,
    users: np.ndarray,
    per_user: int | None,
    k: int,
    min_history: int,
    rng: np.random.Generator,
    latest: bool = False,
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(users, first candidate row)`` of each task and the number of skipped users.

    ``per_user`` distinct cuts per user drawn uniformly over the valid positions (None: the latest
    only); with ``latest`` the latest cut is always one of them and the others are drawn among the
    earlier positions (one cut, the latest, draws nothing from ``rng``)."""
    offsets = data.user_offsets
    start, n = offsets[users], offsets[users + 1] - offsets[users]
    valid = n - k - min_history + 1
    ok = valid > 0
    if per_user is None or (per_user == 1 and latest):
        task_users, pos = users[ok], (start + n - k)[ok]
    elif latest:
        # the latest cut, plus up to per_user - 1 distinct earlier ones drawn uniformly
        reps = np.minimum(valid[ok] - 1, per_user - 1)
        earlier = [
            s + min_history + rng.choice(v - 1, r, replace=False)
            for s, v, r in zip(start[ok], valid[ok], reps, strict=True)
        ]
        task_users = np.concatenate([users[ok], np.repeat(users[ok], reps)])
        pos = np.concatenate([(start + n - k)[ok], *earlier, np.zeros(0, np.int64)])
    else:
        reps = np.minimum(valid[ok], per_user)
        task_users = np.repeat(users[ok], reps)
        pos = np.concatenate(
            [
                s + min_history + rng.choice(v, r, replace=False)
                for s, v, r in zip(start[ok], valid[ok], reps, strict=True)
            ]
            or [np.zeros(0, np.int64)]
        )
    # ties: the candidates start at the user's first interaction at the cut time
    key = data.user * (np.int64(1) << 42) + (data.timestamp - data.timestamp.min())
    first = np.searchsorted(key, key[pos], side="left")
    keep = first - offsets[task_users] >= min_history
    pairs = np.unique(np.stack([task_users[keep], first[keep]], 1), axis=0)
    return pairs[:, 0], pairs[:, 1], len(users) - len(np.unique(pairs[:, 0]))


def build_tasks(
    data: InteractionData,
    needs: Sequence[Need],
    history_len: int = 10,
    num_candidates: int = 20,
    train_cuts_per_user: int = 4,
    sparse_p: float | None = None,
    seed: int = 0,
    min_history: int = 1,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    eval_instructions: str = "canonical",
    eval_cuts_per_user: int = 1,
    negatives: int = 0,
) -> dict[str, TaskSet]:
    """Build the tasks of every split for every need.

    Args:
        data: the dataset.
        needs: bound needs (:meth:`Need.bind`); each (user, cut) gives one task per need.
        history_len: ``L``.
        num_candidates: ``K``.
        train_cuts_per_user: cuts per train user.
        sparse_p: keep each train label with this probability (None: dense).
        seed: seed of the split, cuts, shuffles, instructions and sparse mask.
        min_history: history interactions required before a cut.
        fractions: train / val / test user shares.
        eval_instructions: the paraphrase val / test tasks carry: ``canonical`` (each need's
            first instruction) or ``held_out`` (a seeded draw among the paraphrases that training
            never uses). Training tasks always draw among the non-held-out paraphrases.
        eval_cuts_per_user: cuts per val / test user: the latest, plus up to this many minus one
            distinct earlier cuts drawn uniformly (fewer when the user has fewer valid cuts). More
            cuts buy evaluation precision without more users; a user's tasks are correlated, so
            paired intervals resample users (:mod:`flexrec.benchmark.paired`).
        negatives: candidates per task that are sampled non-interacted items (``0 <= n < K``).

    Returns:
        ``{"train": TaskSet, "val": TaskSet, "test": TaskSet}``.
    """
    if eval_cuts_per_user < 1:
        raise ValueError(f"eval_cuts_per_user must be >= 1, got {eval_cuts_per_user}")
    if sparse_p is not None and not 0.0 < sparse_p <= 1.0:
        raise ValueError(f"sparse_p must be in (0, 1], got {sparse_p}")
    if eval_instructions not in EVAL_INSTRUCTIONS:
        raise ValueError(
            f"eval_instructions must be one of {list(EVAL_INSTRUCTIONS)}, got {eval_instructions!r}"
        )
    if not 0 <= negatives < num_candidates:
        raise ValueError(f"negatives must be in [0, {num_candidates}), got {negatives}")
    splits = split_users(data.num_users, seed, fractions)
    visible = np.ones(data.num_interactions, dtype=bool)
    if sparse_p is not None:
        train_rows = np.isin(data.user, splits["train"])
        draw = np.random.default_rng([seed, 29]).random(data.num_interactions) < sparse_p
        visible = ~train_rows | draw
    clock = ItemClock(data, visible)
    out = {}
    for index, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, index])
        per_user = train_cuts_per_user if split == "train" else eval_cuts_per_user
        positives = num_candidates - negatives
        users, first, skipped = _cuts(
            data, splits[split], per_user, positives, min_history, rng, split != "train"
        )
        sampled = None
        if negatives:
            own = np.random.default_rng([seed, 53, index])
            sampled = sample_negatives(data, users, negatives, own)
        out[split] = _assemble(
            data,
            needs,
            clock,
            visible,
            splits[split],
            users,
            first,
            split,
            history_len,
            num_candidates,
            rng,
            seed,
            eval_instructions,
            sampled,
        )
        out[split].skipped_users = skipped
    return out


def sample_negatives(
    data: InteractionData, users: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """``[T, n]`` distinct items per task that its user never interacted with, drawn with
    probability proportional to each item's number of interactions.

    Raises:
        DataError: a user has interacted with too many of the items to find ``n`` others.
    """
    num_items = data.num_items
    counts = np.bincount(data.item, minlength=num_items).astype(np.float64)
    cdf = np.cumsum(counts)
    seen = np.unique(data.user * np.int64(num_items) + data.item)
    out = np.full((len(users), n), -1, dtype=np.int64)
    for row, user in enumerate(users):
        picked: list[int] = []
        for _ in range(20):
            draws = np.searchsorted(cdf, rng.random(4 * n + 8) * cdf[-1], side="right")
            draws = np.minimum(draws, num_items - 1)
            keys = user * np.int64(num_items) + draws
            fresh = draws[~np.isin(keys, seen)]
            _, first = np.unique(fresh, return_index=True)
            for item in fresh[np.sort(first)]:
                if item not in picked:
                    picked.append(int(item))
            if len(picked) >= n:
                break
        if len(picked) < n:
            raise DataError(
                f"{data.name}: cannot sample {n} non-interacted candidates for user "
                f"{data.user_ids[user]!r} (interacted with most items); lower negatives"
            )
        out[row] = picked[:n]
    return out


def _assemble(
    data: InteractionData,
    needs: Sequence[Need],
    clock: ItemClock,
    visible: np.ndarray,
    split_user_ids: np.ndarray,
    users: np.ndarray,
    first: np.ndarray,
    split: str,
    history_len: int,
    k: int,
    rng: np.random.Generator,
    seed: int,
    eval_instructions: str = "canonical",
    sampled: np.ndarray | None = None,
) -> TaskSet:
    offsets = data.user_offsets
    n_neg = 0 if sampled is None else sampled.shape[1]
    rows = first[:, None] + np.arange(k - n_neg)
    candidates, labels, observed = data.item[rows], data.label[rows], visible[rows]
    is_sampled = np.zeros(candidates.shape, dtype=bool)
    if sampled is not None:
        # sampled non-interactions: label 0, always observed (the data says they did not happen)
        candidates = np.concatenate([candidates, sampled], 1)
        labels = np.concatenate([labels, np.zeros(sampled.shape)], 1)
        observed = np.concatenate([observed, np.ones(sampled.shape, dtype=bool)], 1)
        is_sampled = np.concatenate([is_sampled, np.ones(sampled.shape, dtype=bool)], 1)
    order = np.argsort(rng.random(candidates.shape), axis=1)
    candidates, labels, observed, is_sampled = (
        np.take_along_axis(a, order, 1) for a in (candidates, labels, observed, is_sampled)
    )
    n_hist = np.minimum(history_len, first - offsets[users])
    hist_rows = first[:, None] - n_hist[:, None] + np.arange(history_len)
    hist_ok = np.arange(history_len) < n_hist[:, None]
    hist_rows = np.where(hist_ok, hist_rows, 0)
    history = np.where(hist_ok, data.item[hist_rows], -1)
    history_labels = np.where(hist_ok & visible[hist_rows], data.label[hist_rows], np.nan)
    cut = data.timestamp[first]
    times = np.broadcast_to(cut[:, None], candidates.shape)
    count, mean = clock.before(candidates, times)
    parts: list[dict[str, Any]] = []
    for index, need in enumerate(needs):
        window = need.window or data.trend_window
        recent = clock.window(candidates, times, window)
        features = candidate_features(data, candidates, history, count, mean, recent)
        context = NeedContext(
            novelty=torch.from_numpy(features[..., NOVELTY]),
            trend=torch.from_numpy(features[..., TREND]),
        )
        true = torch.from_numpy(labels)
        raw_gains, raw_relevant = need.gains(true, context), need.relevant(true, context)
        check_need_output(need, raw_gains, raw_relevant, true, observed, f"the {split} split")
        gains = torch.as_tensor(raw_gains).numpy().astype(np.float32)
        relevant = torch.as_tensor(raw_relevant).numpy()
        if split == "train":
            instr = [need.instruction(rng, "train") for _ in range(len(users))]
        else:
            # a dedicated generator: the paraphrase choice never shifts the split's other draws,
            # so canonical and held-out evaluations see the same users, cuts and candidates
            mode = "heldout" if eval_instructions == "held_out" else split
            own = np.random.default_rng([seed, 97, SPLITS.index(split), index])
            instr = [need.instruction(own, mode) for _ in range(len(users))]
        parts.append(
            {
                "need": np.full(len(users), index),
                "features": features,
                "recent": recent,
                "gains": np.where(observed, gains, 0.0).astype(np.float32),
                "relevant": relevant & observed,
                "instruction": instr,
            }
        )
    n = len(needs)

    def tile(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a] * n)

    return TaskSet(
        split=split,
        users=tile(users),
        cut=tile(cut),
        need=np.concatenate([p["need"] for p in parts]),
        history=tile(history),
        history_labels=tile(history_labels),
        candidates=tile(candidates),
        true_labels=tile(labels),
        observed=tile(observed),
        gains=np.concatenate([p["gains"] for p in parts]),
        relevant=np.concatenate([p["relevant"] for p in parts]),
        features=np.concatenate([p["features"] for p in parts]),
        count=tile(count),
        mean_label=tile(mean),
        recent=np.concatenate([p["recent"] for p in parts]),
        instruction=[s for p in parts for s in p["instruction"]],
        need_names=tuple(need.name for need in needs),
        seed=seed,
        visible=visible,
        split_users=split_user_ids,
        sampled=tile(is_sampled) if sampled is not None else None,
    )
