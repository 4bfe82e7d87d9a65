"""Traditional baselines evaluated on the same tasks, as registered ranking policies.

Each scores every candidate independently and acts as the Plackett–Luce policy over its scores
(:class:`~flexrec.baselines.base.ScoringPolicy`), so a benchmark grid lists them as cells
(``model.policy: {name: bpr_mf}``) and they also run in the RL loop and the policy contracts.
Learned baselines fit in :meth:`~flexrec.policies.base.Policy.prepare` on the train users'
interactions.
"""

from __future__ import annotations

from flexrec.baselines.base import ScoringPolicy
from flexrec.baselines.bpr import BPRMFPolicy
from flexrec.baselines.heuristic import (
    FeaturePolicy,
    ItemMeanPolicy,
    PopularityPolicy,
    RecentPopularityPolicy,
)
from flexrec.baselines.sasrec import SASRecPolicy

__all__ = [
    "BPRMFPolicy",
    "FeaturePolicy",
    "ItemMeanPolicy",
    "PopularityPolicy",
    "RecentPopularityPolicy",
    "SASRecPolicy",
    "ScoringPolicy",
]
