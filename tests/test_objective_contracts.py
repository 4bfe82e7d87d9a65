"""The objective contract suite over every built-in objective and a few non-default options."""

from __future__ import annotations

from typing import Any

import pytest

from flexrec.plugin.manager import BUILTIN_PLUGINS
from flexrec.registry import registries
from flexrec.testing.objective_contract import ObjectiveContract


def _builtin_names() -> list[str]:
    return [e.name for e in registries.objective.entries() if e.plugin in BUILTIN_PLUGINS]


def test_both_builtin_objectives_are_registered() -> None:
    assert set(_builtin_names()) == {"clipped", "listmle"}


class TestBuiltinObjectives(ObjectiveContract):
    @pytest.fixture(params=_builtin_names())
    def objective_spec(self, request: pytest.FixtureRequest) -> Any:
        return request.param


class TestBuiltinObjectivesWithOptions(ObjectiveContract):
    """No KL term (no reference pass), asymmetric clipping, untruncated and per-task ListMLE."""

    @pytest.fixture(
        params=[
            {"name": "clipped", "args": {"kl_coef": 0.0, "clip_low": 0.1, "clip_high": 0.3}},
            {"name": "listmle", "args": {"truncate": False}},
            {"name": "listmle", "args": {"normalize": "task"}},
        ],
        ids=["clipped-nokl", "listmle-full", "listmle-task"],
    )
    def objective_spec(self, request: pytest.FixtureRequest) -> Any:
        return request.param
