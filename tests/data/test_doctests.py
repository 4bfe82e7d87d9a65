"""Doctests of the data, need and critic modules."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["flexrec.data.dataset", "flexrec.data.loaders", "flexrec.needs.functional"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
