"""The policy contract (:class:`flexrec.testing.contracts.PolicyContract`) over every built-in policy.

The "done when" properties: native policy (need index or instruction text), tiny LLM (LoRA, full
fine-tuning, reasoning mode), as built by ``make_policy`` (tests/policies/conftest.py); and every
traditional baseline built through the registry, frozen and with its trainable residual (the
learned ones fitted on a small interaction matrix first).
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from flexrec.data.features import FEATURE_NAMES
from flexrec.plugin.manager import BUILTIN_PLUGINS
from flexrec.policies.base import Policy
from flexrec.registry import registries
from flexrec.testing.batches import INSTRUCTIONS
from flexrec.testing.contracts import PolicyContract
from flexrec.testing.fakes import feedback_case
from flexrec.types import DataInfo

KINDS = ["native", "native_text", "llm_lora", "llm_full", "llm_reasoning"]
KIND_POLICIES = {"native", "llm"}  # the registered names of the KINDS
BASELINES = ["feature", "popularity", "recent_popularity", "item_mean", "bpr_mf", "sasrec"]


class TestPolicyKinds(PolicyContract):
    @pytest.fixture(params=KINDS)
    def policy(
        self, request: pytest.FixtureRequest, make_policy: Callable[[str], Policy]
    ) -> Policy:
        return make_policy(request.param)


class _Baselines(PolicyContract):
    """Baselines score ``make_batch`` candidates (ids < 500) by the built-in feature columns."""

    context: ClassVar[dict[str, int]] = {
        "num_items": 600,
        "num_users": 50,
        "num_features": len(FEATURE_NAMES),
        "num_needs": len(INSTRUCTIONS),
    }

    @pytest.fixture
    def policy_datamodule(self) -> Any:
        """Enough of a data module for ``prepare``: its info and the train users' labels."""
        data = feedback_case(num_users=50, num_items=600, density=0.05).train
        info = DataInfo(600, 50, len(FEATURE_NAMES), tuple(INSTRUCTIONS), FEATURE_NAMES)
        return SimpleNamespace(feedback_training_data=lambda: data, info=info)


class TestFrozenBaselines(_Baselines):
    trainable = False

    @pytest.fixture(params=BASELINES)
    def policy_spec(self, request: pytest.FixtureRequest) -> Any:
        return request.param


class TestTrainableBaselines(_Baselines):
    @pytest.fixture(params=BASELINES)
    def policy_spec(self, request: pytest.FixtureRequest) -> Any:
        return {"name": request.param, "args": {"trainable": True}}


def test_every_builtin_policy_is_covered() -> None:
    builtin = {e.name for e in registries.policy.entries() if e.plugin in BUILTIN_PLUGINS}
    assert builtin == KIND_POLICIES | set(BASELINES)
