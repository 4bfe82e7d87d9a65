"""The :class:`Need` base class: instruction paraphrases, gain, relevance and prompt text.

A need turns a task's candidate labels into per-candidate gains ``[..., K]`` and relevance flags
``[..., K]`` given a :class:`NeedContext` (novelty and trend of each candidate, computed by the task
builder from data before the task's cut). Label thresholds default to the dataset's
:class:`~flexrec.data.dataset.LabelScale` (:meth:`Need.bind`); constructor arguments override them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from flexrec.errors import PluginError
from flexrec.needs.functional import interest

__all__ = ["TEXT_STYLES", "ItemStats", "Need", "NeedContext", "check_need_output"]

TEXT_STYLES = ("full", "compact")
"""Prompt text styles: ``full`` (self-describing sentences) and ``compact`` (the same facts but
the release year and alternative titles in far fewer tokens, for CPU-bound LLM training)."""


@dataclass(frozen=True)
class NeedContext:
    """Per-candidate quantities a need's gain may use (tensors or arrays, ``[..., K]``).

    Attributes:
        novelty: share of the candidate's categories absent from the history.
        trend: percentile among the task's candidates of the count in the trend window before t.
    """

    novelty: Any
    trend: Any


@dataclass(frozen=True)
class ItemStats:
    """What the prompt may say about an item, all computed before the task's cut time.

    Attributes:
        title: title without year.
        year: release year or -1.
        categories: category names.
        count: interactions before t.
        mean_label: mean label before t (NaN when ``count == 0``).
        recent: interactions in the need's trend window before t.
        label: the user's own label (history items), NaN otherwise.
    """

    title: str
    year: int
    categories: Sequence[str]
    count: int = 0
    mean_label: float = float("nan")
    recent: int = 0
    label: float = float("nan")


def _main_title(title: str) -> str:
    """The title without a trailing alternative title in parentheses (``"Shall We Dance? (1937)"``
    style years are already split off by the loaders)."""
    if title.endswith(")") and " (" in title:
        head = title[: title.rindex(" (")].strip()
        if head:
            return head
    return title


def _window_words(seconds: int, unit: str = "seconds") -> str:
    """``30 days``, ``24 hours``; ``518 interactions`` when time is the row order (``rows``)."""
    if unit == "rows":
        return f"{seconds:,} interactions"
    if seconds % 86_400 == 0:
        days = seconds // 86_400
        return "24 hours" if days == 1 else f"{days} days"
    return f"{seconds / 3600:g} hours"


class Need:
    """Base class of needs (registered through ``flexrec_register_needs``).

    Subclasses set ``name``, ``instructions`` (≥ 3 paraphrases), ``held_out`` (indices of the
    paraphrases never used in training) and implement :meth:`gains` and :meth:`relevant`.

    Args:
        threshold: interest threshold τ (default: the dataset's).
        maximum: label where interest saturates (default: the dataset's).
        relevant_threshold: labels ≥ this are interest-relevant (default: the dataset's).
    """

    name: ClassVar[str]
    instructions: ClassVar[tuple[str, ...]]
    held_out: ClassVar[tuple[int, ...]] = ()
    window: int | None = None
    time_unit: str = "seconds"
    text_style: str = "full"

    def __init__(
        self,
        threshold: float | None = None,
        maximum: float | None = None,
        relevant_threshold: float | None = None,
    ) -> None:
        self.threshold = threshold
        self.maximum = maximum
        self.relevant_threshold = relevant_threshold
        self.label_name = "rating"

    def bind(
        self,
        scale: Any,
        trend_window: int | None = None,
        text_style: str | None = None,
        time_unit: str | None = None,
    ) -> Need:
        """Fill unset thresholds (and the trend window) from a dataset and set the prompt text
        style (one of :data:`TEXT_STYLES`, default ``full``) and the dataset's time unit
        (``seconds``, or ``rows`` when row order stands in for time); returns ``self``."""
        if time_unit is not None:
            self.time_unit = time_unit
        if text_style is not None:
            if text_style not in TEXT_STYLES:
                raise ValueError(f"text_style must be one of {TEXT_STYLES}, got {text_style!r}")
            self.text_style = text_style
        self.threshold = scale.threshold if self.threshold is None else self.threshold
        self.maximum = scale.maximum if self.maximum is None else self.maximum
        if self.relevant_threshold is None:
            self.relevant_threshold = scale.relevant
        self.label_name = scale.name
        if self.window is None and trend_window is not None:
            self.window = int(trend_window)
        return self

    def _scale(self) -> tuple[float, float, float]:
        if self.threshold is None or self.maximum is None or self.relevant_threshold is None:
            raise ValueError(f"need {self.name!r} has no label scale: call bind(dataset.scale)")
        return self.threshold, self.maximum, self.relevant_threshold

    # ------------------------------------------------------------------ gains
    def interest(self, labels: Any) -> Tensor:
        """``[..., K]`` interest gain of raw labels (0 where NaN)."""
        tau, top, _ = self._scale()
        return interest(torch.as_tensor(labels), tau, top)

    def interest_relevant(self, labels: Any) -> Tensor:
        """``[..., K]`` bool: label ≥ the relevance threshold (False where NaN)."""
        return torch.as_tensor(labels).float() >= self._scale()[2]

    def gains(self, labels: Any, context: NeedContext) -> Tensor:
        """Per-candidate gain ``[..., K]`` from raw labels ``[..., K]`` (0 where NaN)."""
        raise NotImplementedError

    def relevant(self, labels: Any, context: NeedContext) -> Tensor:
        """Per-candidate relevance ``[..., K]`` bool for Recall / MRR."""
        raise NotImplementedError

    # ------------------------------------------------------------------ prompts
    def instruction(self, rng: np.random.Generator, split: str = "train") -> str:
        """A paraphrase: random non-held-out in ``train``, random held-out for ``heldout``,
        the canonical first one otherwise (``val`` / ``test``)."""
        if split == "train":
            pool = [i for i in range(len(self.instructions)) if i not in self.held_out]
        elif split == "heldout":
            pool = list(self.held_out) or [0]
        else:
            return self.instructions[0]
        return self.instructions[pool[int(rng.integers(len(pool)))]]

    def _head(self, item: ItemStats) -> str:
        cats = ", ".join(item.categories) if item.categories else "no category"
        if self.text_style == "compact":
            return f"{_main_title(item.title)} | {cats}"
        title = f"{item.title} ({item.year})" if item.year > 0 else item.title
        return f"{title} | {cats}"

    def _rating(self, item: ItemStats) -> str:
        compact = self.text_style == "compact"
        if item.count == 0 or np.isnan(item.mean_label):
            return "unrated" if compact else f"no {self.label_name}s yet"
        if compact:
            return f"avg {item.mean_label:.1f} ({item.count})"
        return f"mean {self.label_name} {item.mean_label:.1f} from {item.count} users"

    def item_text(self, item: ItemStats) -> str:
        """One line describing a candidate: title (year) | categories | statistics the need uses.

        Examples:
            >>> from flexrec.data.dataset import MOVIELENS_SCALE
            >>> need = Need().bind(MOVIELENS_SCALE, text_style="compact")
            >>> need.item_text(ItemStats("French Twist (Gazon maudit)", 1995, ["Comedy"], 15, 3.27))
            'French Twist | Comedy | avg 3.3 (15)'
            >>> need.text_style = "full"
            >>> need.item_text(ItemStats("French Twist (Gazon maudit)", 1995, ["Comedy"], 15, 3.27))
            'French Twist (Gazon maudit) (1995) | Comedy | mean rating 3.3 from 15 users'
        """
        return f"{self._head(item)} | {self._rating(item)}"

    def history_text(self, item: ItemStats) -> str:
        """One line describing a history item with the user's own label when observed."""
        if np.isnan(item.label):
            return self._head(item)
        if self.text_style == "compact":
            return f"{self._head(item)} | rated {item.label:g}"
        return f"{self._head(item)} | your {self.label_name}: {item.label:g}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threshold={self.threshold}, maximum={self.maximum})"


def check_need_output(
    need: Need, gains: Any, relevant: Any, labels: Tensor, observed: Any, where: str
) -> None:
    """Refuse gains or relevance flags that a need returned for ``labels`` and that training would
    choke on, naming the need: a shape other than the labels' ``[..., K]``, or a gain of an
    observed candidate that is not finite or outside ``[0, 1]``.

    Cheap enough to run on every task set: shape checks, one ``isfinite`` and one range test.

    Args:
        need: the need that computed them.
        gains: what ``need.gains(labels, context)`` returned.
        relevant: what ``need.relevant(labels, context)`` returned.
        labels: the labels ``[..., K]`` they were computed from.
        observed: ``[..., K]`` bool, the candidates whose gains are used (the others are zeroed).
        where: which tasks, for the message (e.g. ``"the train split"``).

    Raises:
        PluginError: e.g. ``need 'x' gave gain nan to task 3, candidate 1 of the train split
            (label 4.0); a need's gains must be finite and in [0, 1]``.

    Examples:
        >>> from flexrec.data.dataset import MOVIELENS_SCALE
        >>> from flexrec.needs.builtin import MaximizeInterest
        >>> need = MaximizeInterest().bind(MOVIELENS_SCALE)
        >>> labels = torch.tensor([[5.0, 2.0]])
        >>> observed = torch.ones(1, 2, dtype=torch.bool)
        >>> check_need_output(need, torch.tensor([1.0]), torch.ones(1, 2, dtype=torch.bool),
        ...                   labels, observed, "the train split")
        Traceback (most recent call last):
        ...
        flexrec.errors.PluginError: need 'maximize_interest' returned gains of shape (1,) for the labels of the train split, expected (1, 2) (one per candidate, like the labels)
    """
    shape = tuple(labels.shape)
    for what, value in (("gains", gains), ("relevant", relevant)):
        found = tuple(value.shape) if hasattr(value, "shape") else type(value).__name__
        if found != shape:
            raise PluginError(
                f"need {need.name!r} returned {what} of shape {found} for the labels of {where}, "
                f"expected {shape} (one per candidate, like the labels)"
            )
    dtype = torch.as_tensor(relevant).dtype
    if dtype != torch.bool:
        raise PluginError(
            f"need {need.name!r} returned relevant of dtype {dtype} for the labels of {where}, "
            "expected bool"
        )
    used = torch.where(torch.as_tensor(observed), torch.as_tensor(gains).double(), 0.0)
    bad = ~torch.isfinite(used) | (used < -1e-6) | (used > 1 + 1e-6)
    if bool(bad.any()):
        index = tuple(int(i) for i in bad.nonzero()[0])
        task = ", ".join(f"{i}" for i in index[:-1])
        raise PluginError(
            f"need {need.name!r} gave gain {used[index].item():g} to task {task}, candidate "
            f"{index[-1]} of {where} (label {float(labels[index]):g}); a need's gains must be "
            "finite and in [0, 1]"
        )
