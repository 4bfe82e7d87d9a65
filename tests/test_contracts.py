"""The public contract suites, run over every registered built-in component."""

from __future__ import annotations

from typing import Any

import pytest

from flexrec.plugin.manager import BUILTIN_PLUGINS
from flexrec.registry import registries
from flexrec.testing.contracts import EstimatorContract, NeedContract, RewardContract


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


def test_every_builtin_family_is_covered() -> None:
    assert len(_builtin_names(registries.reward)) >= 5
    assert len(_builtin_names(registries.estimator)) >= 3
