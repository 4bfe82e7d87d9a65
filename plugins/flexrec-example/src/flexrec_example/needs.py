"""``hidden_gems``: items the user will enjoy that few other people have been watching lately.

Hand-computed example (MovieLens scale: τ = 3, max = 5, relevance at 4; ``max_trend = 0.5``)::

    labels   = [5,   4,   2,   4.5]
    interest = [1,   0.5, 0,   0.75]
    trend    = [1,   0,   1/3, 2/3]   -> gains [0, 0.5, 0, 0.25], relevant [F, T, F, F]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from flexrec.needs.base import ItemStats, Need, NeedContext

__all__ = ["HiddenGems"]


class HiddenGems(Need):
    """Gain = interest(a) × (1 − trend(a)); relevant = interest-relevant and trend ≤ ``max_trend``.

    ``trend`` is the percentile, among the task's ``K`` candidates, of the item's interaction count
    in the need's ``window`` before the task's cut (``NeedContext.trend``, ``[..., K]``; the
    window defaults to the dataset's trend window). So the gain rewards what the user likes and
    the crowd is *not* currently watching: the mirror image of ``trend_promotion``. An unliked
    item gains nothing however obscure it is.

    Args:
        max_trend: trend percentile at or below which an interesting item counts as relevant
            (default 0.5: the less-watched half of the candidates).
        window: trend window in seconds (None: the dataset's).
        threshold: interest threshold τ (None: the dataset's; see :class:`~flexrec.needs.base.Need`).
        maximum: label maximum (None: the dataset's).
        relevant_threshold: label needed to be interest-relevant (None: the dataset's).
    """

    name = "hidden_gems"
    instructions = (
        "Rank the candidates so that items I will enjoy but that few people are watching right "
        "now come first.",
        "Find me hidden gems: good picks for my taste that are not popular at the moment.",
        "Put the under-the-radar items I am likely to love at the top.",
        "Skip the crowd favourites and show me lesser-watched items that suit me first.",
    )
    held_out = (3,)

    def __init__(
        self,
        max_trend: float = 0.5,
        window: int | None = None,
        threshold: float | None = None,
        maximum: float | None = None,
        relevant_threshold: float | None = None,
    ) -> None:
        super().__init__(threshold, maximum, relevant_threshold)
        if not 0.0 <= max_trend <= 1.0:
            raise ValueError(f"max_trend must be in [0, 1], got {max_trend}")
        if window is not None and window <= 0:
            raise ValueError(f"window must be positive seconds, got {window}")
        self.max_trend = max_trend
        self.window = window

    def gains(self, labels: Any, context: NeedContext) -> Tensor:
        """``[..., K]`` interest × (1 − trend)."""
        trend = torch.as_tensor(context.trend).float()
        return self.interest(labels) * (1.0 - trend)

    def relevant(self, labels: Any, context: NeedContext) -> Tensor:
        """``[..., K]`` interest-relevant and trend ≤ ``max_trend``."""
        trend = torch.as_tensor(context.trend).float()
        return self.interest_relevant(labels) & (trend <= self.max_trend + 1e-9)

    def item_text(self, item: ItemStats) -> str:
        """Adds the recent count the gain depends on: ``... | 3 views in the last 30 days``."""
        return f"{super().item_text(item)} | {item.recent} views in the last {_window(self.window)}"


def _window(seconds: int | None) -> str:
    """``86400`` -> ``"24 hours"``, ``2592000`` -> ``"30 days"``, None -> ``"recent window"``."""
    if not seconds:
        return "recent window"
    if seconds % 86_400 == 0 and seconds > 86_400:
        return f"{seconds // 86_400} days"
    return f"{seconds / 3600:g} hours"
