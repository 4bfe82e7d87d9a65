"""Built-in needs (EVALUATION.md §3): ``maximize_interest``, ``explore_new_topics``, ``trend_promotion``.

Hand-computed example (MovieLens scale, τ = 3, max = 5, relevance at 4)::

    labels   = [5,   4,   2,   4.5]
    interest = [1,   0.5, 0,   0.75]
    novelty  = [0,   1,   1,   0.5]   -> explore gains [0, 0.5, 0, 0.375], relevant [F, T, F, F]
    trend    = [1,   0,   1/3, 2/3]  -> trend gains   [1, 0.25, 1/6, 0.7083], relevant [T, F, F, F]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from flexrec.needs.base import ItemStats, Need, NeedContext, _window_words
from flexrec.plugin.spec import hookimpl

__all__ = ["ExploreNewTopics", "MaximizeInterest", "TrendPromotion"]


class MaximizeInterest(Need):
    """Gain = interest(a); relevant = interest-relevant (rating ≥ 4 / watch ratio ≥ 2)."""

    name = "maximize_interest"
    instructions = (
        "Rank the candidates by how much I will enjoy them.",
        "Put the items I am most likely to love at the top.",
        "Order these candidates from the one I would like most to the one I would like least.",
        "Sort the list so that my favourites come first.",
    )
    held_out = (3,)

    def gains(self, labels: Any, context: NeedContext | None = None) -> Tensor:
        """``[..., K]`` interest of the labels."""
        return self.interest(labels)

    def relevant(self, labels: Any, context: NeedContext | None = None) -> Tensor:
        """``[..., K]`` interest-relevant."""
        return self.interest_relevant(labels)


class ExploreNewTopics(Need):
    """Gain = interest(a) × novelty(a); relevant = interest-relevant and novelty ≥ ``min_novelty``.

    Args:
        min_novelty: novelty needed to count as relevant (default 0.5).
        threshold: interest threshold τ (None: the dataset's; see :class:`Need`).
        maximum: label maximum (None: the dataset's).
        relevant_threshold: label needed to be interest-relevant (None: the dataset's).
    """

    name = "explore_new_topics"
    instructions = (
        "Rank the candidates so that items from topics I have not explored yet, but would still "
        "enjoy, come first.",
        "I want to discover something new: put enjoyable items outside my usual categories on top.",
        "Help me branch out: favour candidates from new genres that I am likely to like.",
        "Surprise me with good picks from categories missing from my history.",
    )
    held_out = (3,)

    def __init__(
        self,
        min_novelty: float = 0.5,
        threshold: float | None = None,
        maximum: float | None = None,
        relevant_threshold: float | None = None,
    ) -> None:
        super().__init__(threshold, maximum, relevant_threshold)
        self.min_novelty = min_novelty

    def gains(self, labels: Any, context: NeedContext) -> Tensor:
        """``[..., K]`` interest × novelty."""
        return self.interest(labels) * torch.as_tensor(context.novelty).float()

    def relevant(self, labels: Any, context: NeedContext) -> Tensor:
        """``[..., K]`` interest-relevant and novel."""
        novel = torch.as_tensor(context.novelty).float() >= self.min_novelty
        return self.interest_relevant(labels) & novel


class TrendPromotion(Need):
    """Gain = (1 − w) interest(a) + w trend(a); relevant = interest-relevant and trend in the top
    ``top_fraction``.

    ``trend`` is the percentile, among the task's candidates, of the item's interaction count in
    the ``window`` seconds before the cut (dataset default: 24 h KuaiRec, 30 days MovieLens).

    Args:
        window: trend window in seconds (None: the dataset's).
        weight: w, the trend share of the gain (default 0.5).
        top_fraction: trend percentile ≥ 1 − this counts as trending (default 0.25).
        threshold: interest threshold τ (None: the dataset's; see :class:`Need`).
        maximum: label maximum (None: the dataset's).
        relevant_threshold: label needed to be interest-relevant (None: the dataset's).
    """

    name = "trend_promotion"
    instructions = (
        "Rank the candidates favouring items that are popular right now and that I will like.",
        "Promote what is trending at the moment, as long as it suits my taste.",
        "Put currently hot items I would enjoy at the top of the list.",
        "Show me the trending picks that match what I like first.",
    )
    held_out = (3,)

    def __init__(
        self,
        window: int | None = None,
        weight: float = 0.5,
        top_fraction: float = 0.25,
        threshold: float | None = None,
        maximum: float | None = None,
        relevant_threshold: float | None = None,
    ) -> None:
        super().__init__(threshold, maximum, relevant_threshold)
        if window is not None and window <= 0:
            raise ValueError(f"window must be positive seconds, got {window}")
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {weight}")
        self.window = window
        self.weight = weight
        self.top_fraction = top_fraction

    def gains(self, labels: Any, context: NeedContext) -> Tensor:
        """``[..., K]`` (1 − w) interest + w trend (the trend part counts even when unliked)."""
        trend = torch.as_tensor(context.trend).float()
        return (1.0 - self.weight) * self.interest(labels) + self.weight * trend

    def relevant(self, labels: Any, context: NeedContext) -> Tensor:
        """``[..., K]`` interest-relevant and trending."""
        trend = torch.as_tensor(context.trend).float()
        return self.interest_relevant(labels) & (trend >= 1.0 - self.top_fraction - 1e-9)

    def item_text(self, item: ItemStats) -> str:
        """Adds the recent count: ``... | 37 views in the last 30 days`` (compact style:
        ``... | 37 in 30 days``)."""
        window = _window_words(self.window, self.time_unit) if self.window else "recent window"
        if self.text_style == "compact":
            return f"{super().item_text(item)} | {item.recent} in {window}"
        return f"{super().item_text(item)} | {item.recent} views in the last {window}"


@hookimpl
def flexrec_register_needs() -> list[type]:
    """The built-in needs."""
    return [MaximizeInterest, ExploreNewTopics, TrendPromotion]
