"""flexrec's contract suites, run against the example plug-in's components through the registry."""

from __future__ import annotations

from typing import Any, ClassVar

from flexrec.data.dataset import KUAIREC_SCALE, LabelScale
from flexrec.testing.contracts import EstimatorContract, NeedContract, RewardContract
from flexrec.testing.objective_contract import ObjectiveContract


class TestDiverseSwapContract(RewardContract):
    spec: ClassVar[Any] = {"name": "diverse_swap", "args": {"cutoff": 3, "penalty": 0.2}}


class TestDiverseSwapFullListContract(RewardContract):
    spec: ClassVar[Any] = "diverse_swap"


class TestRLOOUncertaintyContract(EstimatorContract):
    spec: ClassVar[Any] = {"name": "rloo_ua", "args": {"normalize": "group"}}


class TestRLOOUncertaintyClippedContract(EstimatorContract):
    spec: ClassVar[Any] = {"name": "rloo_ua", "args": {"clip": 0.5, "level": "item"}}


class TestHiddenGemsContract(NeedContract):
    spec: ClassVar[Any] = {"name": "hidden_gems", "args": {"max_trend": 0.25}}


class TestHiddenGemsOnWatchRatiosContract(NeedContract):
    """The same checks (gains finite and in [0, 1], sampled labels, candidate order) on KuaiRec's
    watch-ratio scale and its 24-hour trend window."""

    spec: ClassVar[Any] = "hidden_gems"
    scale: ClassVar[LabelScale] = KUAIREC_SCALE
    trend_window: ClassVar[int] = 86_400


class TestPairwiseLogisticContract(ObjectiveContract):
    spec: ClassVar[Any] = {"name": "pairwise_logistic", "args": {"sigma": 2.0}}
