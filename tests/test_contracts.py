"""The public contract suites, run over every registered built-in component."""

from __future__ import annotations

from typing import Any

import pytest

from flexrec.data.dataset import KUAIREC_SCALE
from flexrec.plugin.manager import BUILTIN_PLUGINS
from flexrec.registry import registries
from flexrec.testing.contracts import (
    EstimatorContract,
    FeedbackModelContract,
    NeedContract,
    RewardContract,
)


def _builtin_names(registry: Any) -> list[str]:
    return [e.name for e in registry.entries() if e.plugin in BUILTIN_PLUGINS]


class TestBuiltinRewards(RewardContract):
    @pytest.fixture(params=_builtin_names(registries.reward))
    def reward_spec(self, request: pytest.FixtureRequest) -> Any:
        return request.param


class TestBuiltinRewardsWithCutoff(RewardContract):
    @pytest.fixture(params=_builtin_names(registries.reward))
    def reward_spec(self, request: pytest.FixtureRequest) -> Any:
        return {"name": request.param, "args": {"cutoff": 3}}


class TestBuiltinEstimators(EstimatorContract):
    @pytest.fixture(params=_builtin_names(registries.estimator))
    def estimator_spec(self, request: pytest.FixtureRequest) -> Any:
        return request.param


class TestBuiltinNeeds(NeedContract):
    @pytest.fixture(params=_builtin_names(registries.need) or [None])
    def need_spec(self, request: pytest.FixtureRequest) -> Any:
        if request.param is None:
            pytest.skip("no built-in needs registered yet")
        return request.param


class TestBuiltinNeedsOnWatchRatios(NeedContract):
    """The built-in needs bound to KuaiRec's watch-ratio scale and 24-hour trend window."""

    scale = KUAIREC_SCALE
    trend_window = 86_400

    @pytest.fixture(params=_builtin_names(registries.need))
    def need_spec(self, request: pytest.FixtureRequest) -> Any:
        return request.param


class TestBuiltinFeedbackModels(FeedbackModelContract):
    @pytest.fixture(params=_builtin_names(registries.feedback))
    def feedback_spec(self, request: pytest.FixtureRequest) -> Any:
        return request.param


class TestBuiltinFeedbackModelsWithOptions(FeedbackModelContract):
    """Non-default options: a one-member critic (no ensemble disagreement) and one neighbour."""

    @pytest.fixture(
        params=[
            {"name": "critic", "args": {"members": 1, "seed": 7}},
            {"name": "user_knn", "args": {"k": 1}},
            {"name": "item_knn", "args": {"k": 1}},
        ]
    )
    def feedback_spec(self, request: pytest.FixtureRequest) -> Any:
        return request.param


def test_every_builtin_family_is_covered() -> None:
    assert len(_builtin_names(registries.reward)) >= 5
    assert len(_builtin_names(registries.estimator)) >= 3
    assert set(_builtin_names(registries.feedback)) >= {"critic", "user_knn", "item_knn"}
    # the policies run through PolicyContract in tests/policies/test_contract.py
