"""The observed training labels a feedback model learns from (:class:`FeedbackData`).

Feedback models (:mod:`flexrec.critic`) fill the gains of unobserved candidates; they learn from
the labels of the train users that the task builder left visible. This is data, so it lives with
the tasks it is cut from: the data layer never depends on the feedback models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from flexrec.data.dataset import InteractionData
from flexrec.data.tasks import TaskSet
from flexrec.needs.base import Need

__all__ = ["FeedbackData"]


@dataclass(frozen=True)
class FeedbackData:
    """Observed training labels a feedback model learns from.

    Attributes:
        user: ``[N]`` user indices.
        item: ``[N]`` item indices.
        label: ``[N]`` observed labels.
        num_users: ``U``.
        num_items: ``I``.
        item_categories: ``[I, C]`` bool.
        needs: bound needs by name (to turn labels into gains).
    """

    user: np.ndarray
    item: np.ndarray
    label: np.ndarray
    num_users: int
    num_items: int
    item_categories: np.ndarray
    needs: dict[str, Need]

    @classmethod
    def from_tasks(
        cls, data: InteractionData, train_tasks: TaskSet, needs: Sequence[Need]
    ) -> FeedbackData:
        """The visible interactions of the train users of ``train_tasks``, and the sampled
        non-interacted candidates of its tasks (label 0) when it has them."""
        rows = np.isin(data.user, train_tasks.split_users) & train_tasks.visible
        user, item, label = data.user[rows], data.item[rows], data.label[rows]
        if train_tasks.sampled is not None and train_tasks.sampled.any():
            t, k = np.nonzero(train_tasks.sampled)
            pairs = np.unique(
                np.stack([train_tasks.users[t], train_tasks.candidates[t, k]]), axis=1
            )
            user = np.concatenate([user, pairs[0]])
            item = np.concatenate([item, pairs[1]])
            label = np.concatenate([label, np.zeros(pairs.shape[1])])
        return cls(
            user=user,
            item=item,
            label=label,
            num_users=data.num_users,
            num_items=data.num_items,
            item_categories=data.item_categories,
            needs={n.name: n for n in needs},
        )

    def __len__(self) -> int:
        return len(self.user)

    def split(self, fraction: float, seed: int = 0) -> tuple[FeedbackData, FeedbackData]:
        """``(fit part, held-out part)`` with ``fraction`` of the labels held out (seeded)."""
        held = np.random.default_rng(seed).random(len(self)) < fraction

        def part(mask: np.ndarray) -> FeedbackData:
            return replace(self, user=self.user[mask], item=self.item[mask], label=self.label[mask])

        return part(~held), part(held)
