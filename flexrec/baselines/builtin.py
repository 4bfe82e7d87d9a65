"""Built-in traditional baselines, registered through the same hook as plug-ins."""

from __future__ import annotations

from flexrec.baselines.bpr import BPRMFPolicy
from flexrec.baselines.heuristic import (
    FeaturePolicy,
    ItemMeanPolicy,
    PopularityPolicy,
    RecentPopularityPolicy,
)
from flexrec.baselines.sasrec import SASRecPolicy
from flexrec.plugin.spec import hookimpl

__all__ = ["flexrec_register_policies"]


@hookimpl
def flexrec_register_policies() -> list[type]:
    """``feature``, ``popularity``, ``recent_popularity``, ``item_mean``, ``bpr_mf``, ``sasrec``."""
    return [
        FeaturePolicy,
        PopularityPolicy,
        RecentPopularityPolicy,
        ItemMeanPolicy,
        BPRMFPolicy,
        SASRecPolicy,
    ]
