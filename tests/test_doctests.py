"""Run the doctests of the modules whose docstrings carry worked examples."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "flexrec.types",
    "flexrec.metrics",
    "flexrec.registry",
    "flexrec.rewards.functional",
    "flexrec.estimators.functional",
    "flexrec.objectives",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.failed == 0
