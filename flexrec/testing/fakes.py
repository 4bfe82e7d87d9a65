"""Small stand-ins for real data, so tests that need them run on any clone, fast.

:func:`fake_kuairec_side` writes a KuaiRec 2.0 ``item_categories.csv`` with made-up tags: enough for
:func:`flexrec.data.simulator.simulate_kuairec` (and ``load_dataset("kuairec-sim", root=...)``),
which otherwise reads the real side tables::

    from flexrec.data.simulator import SimulatorConfig, simulate_kuairec
    from flexrec.testing.fakes import fake_kuairec_side

    side = fake_kuairec_side(tmp_path / "kuairec-side")
    data = simulate_kuairec(side, SimulatorConfig(num_users=50, num_items=200))

The real table is not reproduced, only its shape: 31 tags (``0`` … ``30``) with skewed
frequencies, one tag for most videos and up to four for a few (like the real one, where 84 % of the
10,728 videos have one tag).

:func:`feedback_case` builds a small feedback-model problem in memory (training labels, held-out
labels and a batch of sparse tasks); :class:`~flexrec.testing.contracts.FeedbackModelContract`
runs on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from flexrec.data.feedback import FeedbackData
    from flexrec.types import RankingBatch

__all__ = ["NUM_KUAIREC_TAGS", "FeedbackCase", "fake_kuairec_side", "feedback_case"]

NUM_KUAIREC_TAGS = 31
_TAGS_PER_ITEM = (0.836, 0.146, 0.017, 0.001)  # P(1 tag), ..., P(4 tags), as in KuaiRec 2.0


def fake_kuairec_side(directory: str | Path, num_items: int = 2000, seed: int = 0) -> Path:
    """Write a made-up KuaiRec ``item_categories.csv`` (``video_id,feat``) to ``directory``.

    Args:
        directory: output folder (created); an existing ``item_categories.csv`` is overwritten.
        num_items: videos ``0 … num_items - 1``.
        seed: seed of the tags.

    Returns:
        ``directory``, usable as the ``side`` folder of the simulator or as
        ``<root>/kuairec-side`` for :func:`flexrec.data.loaders.load_dataset`.
    """
    rng = np.random.default_rng(seed)
    popularity = rng.permutation(1.0 / np.arange(1, NUM_KUAIREC_TAGS + 1) ** 0.8)
    popularity /= popularity.sum()
    counts = rng.choice(len(_TAGS_PER_ITEM), num_items, p=_TAGS_PER_ITEM) + 1
    rows = ["video_id,feat"]
    for video, count in enumerate(counts.tolist()):
        tags = rng.choice(NUM_KUAIREC_TAGS, count, replace=False, p=popularity).tolist()
        feat = f"[{tags[0]}]" if count == 1 else '"[' + ", ".join(map(str, tags)) + ']"'
        rows.append(f"{video},{feat}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / "item_categories.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out


@dataclass(frozen=True)
class FeedbackCase:
    """A small feedback-model problem on a MovieLens-like rating scale (0.5 … 5).

    Attributes:
        train: observed training labels (the last user and the last item have none: cold start).
        heldout: labels of other pairs, never in ``train``, to score predictions on.
        batch: ``B`` sparse tasks of ``K`` candidates: every task has observed and hidden
            candidates, one task is the cold user's and one has the cold item; needs cycle over
            ``maximize_interest``, ``explore_new_topics`` and ``trend_promotion``; observed
            candidates carry their true gain, hidden ones gain 0 and label NaN.
        truth: ``[U, I]`` the true label of every pair.
    """

    train: FeedbackData
    heldout: FeedbackData
    batch: RankingBatch
    truth: np.ndarray


def feedback_case(
    num_users: int = 40,
    num_items: int = 80,
    density: float = 0.3,
    num_tasks: int = 6,
    num_candidates: int = 8,
    seed: int = 0,
) -> FeedbackCase:
    """A seeded :class:`FeedbackCase` whose labels a feedback model can learn.

    A label is ``3 + user bias + item bias + the user's taste for the item's categories + noise``,
    clipped to ``[0.5, 5]`` and rounded to half stars, so users and items differ far more than the
    noise: a model that learns from the labels beats their global mean on held-out pairs.

    Args:
        num_users: ``U``.
        num_items: ``I``.
        density: share of the (warm) pairs with a training label.
        num_tasks: ``B`` (at least 2).
        num_candidates: ``K`` (at least 2, at most ``I``).
        seed: random seed.
    """
    import torch

    from flexrec.data.dataset import DAY, MOVIELENS_SCALE
    from flexrec.data.features import FEATURE_NAMES, NOVELTY, TREND
    from flexrec.data.feedback import FeedbackData
    from flexrec.needs.base import NeedContext
    from flexrec.needs.builtin import ExploreNewTopics, MaximizeInterest, TrendPromotion
    from flexrec.types import RankingBatch

    rng = np.random.default_rng(seed)
    num_categories = 5
    categories = rng.random((num_items, num_categories)) < 0.3
    categories[np.arange(num_items), rng.integers(0, num_categories, num_items)] = True
    taste = rng.normal(0.0, 0.6, (num_users, num_categories))
    affinity = taste @ categories.T / categories.sum(1)[None]
    raw = (
        3.0
        + rng.normal(0.0, 0.8, (num_users, 1))
        + rng.normal(0.0, 0.6, (1, num_items))
        + affinity
        + rng.normal(0.0, 0.3, (num_users, num_items))
    )
    truth = np.clip(np.round(raw * 2) / 2, 0.5, 5.0)
    warm = np.ones((num_users, num_items), dtype=bool)
    warm[-1, :] = warm[:, -1] = False  # the cold user and the cold item
    draw = rng.random((num_users, num_items))
    in_train = warm & (draw < density)
    in_heldout = warm & (draw >= density) & (draw < density + 0.2)
    needs = [
        cls().bind(MOVIELENS_SCALE, trend_window=30 * DAY)
        for cls in (MaximizeInterest, ExploreNewTopics, TrendPromotion)
    ]

    def labels(mask: np.ndarray) -> FeedbackData:
        user, item = np.nonzero(mask)
        return FeedbackData(
            user=user,
            item=item,
            label=truth[user, item],
            num_users=num_users,
            num_items=num_items,
            item_categories=categories,
            needs={need.name: need for need in needs},
        )

    users = np.append(rng.choice(num_users - 1, num_tasks - 1, replace=False), num_users - 1)
    candidates = np.stack(
        [rng.choice(num_items - 1, num_candidates, replace=False) for _ in range(num_tasks)]
    )
    candidates[0, -1] = num_items - 1  # the cold item
    observed = rng.random((num_tasks, num_candidates)) < 0.4
    observed[:, 0], observed[:, 1] = True, False
    observed[0, -1] = False  # the cold item must be predicted
    features = torch.rand(
        num_tasks,
        num_candidates,
        len(FEATURE_NAMES),
        generator=torch.Generator().manual_seed(seed),
    )
    true_labels = torch.from_numpy(truth[users[:, None], candidates]).float()
    task_needs = [needs[b % len(needs)] for b in range(num_tasks)]
    gains = torch.zeros(num_tasks, num_candidates)
    relevant = torch.zeros(num_tasks, num_candidates, dtype=torch.bool)
    for b, need in enumerate(task_needs):
        context = NeedContext(novelty=features[b, :, NOVELTY], trend=features[b, :, TREND])
        gains[b] = need.gains(true_labels[b], context)
        relevant[b] = need.relevant(true_labels[b], context)
    seen = torch.from_numpy(observed)
    batch = RankingBatch(
        candidate_ids=torch.from_numpy(candidates).long(),
        gains=torch.where(seen, gains, 0.0),
        observed=seen,
        relevant=relevant & seen,
        need=[need.name for need in task_needs],
        instruction=[type(need).instructions[0] for need in task_needs],
        history_ids=torch.full((num_tasks, 1), -1, dtype=torch.long),
        history_labels=torch.zeros(num_tasks, 1),
        user_ids=torch.from_numpy(users).long(),
        need_index=torch.tensor([b % len(needs) for b in range(num_tasks)]),
        labels=torch.where(seen, true_labels, torch.nan),
        candidate_features=features,
        meta=[{"dataset": "feedback_case", "seed": seed} for _ in range(num_tasks)],
    )
    return FeedbackCase(labels(in_train), labels(in_heldout), batch, truth)
