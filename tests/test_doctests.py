"""The worked examples in docstrings are doctests, run by pytest over the whole package.

``--doctest-modules`` over ``flexrec/`` (pyproject.toml) collects every module's examples, so no
module list has to be kept here. These tests make sure that stays so: the set-up is in place, and
the modules documented by worked examples still have them.
"""

from __future__ import annotations

import doctest
import importlib
import tomllib
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

MODULES_WITH_EXAMPLES = [
    "flexrec.types",
    "flexrec.errors",
    "flexrec.metrics",
    "flexrec.registry",
    "flexrec.rewards.functional",
    "flexrec.estimators.functional",
    "flexrec.objectives.functional",
    "flexrec.data.dataset",
    "flexrec.data.loaders",
    "flexrec.needs.functional",
    "flexrec.policies.base",
    "flexrec.policies.free_text",
    "flexrec.policies.trie",
    "flexrec.baselines.heuristic",
    "flexrec.baselines.sasrec",
    "flexrec.benchmark.grid",
    "flexrec.benchmark.paired",  # the report's statistics (mean_se moved here)
    "flexrec.benchmark.curves",
]


def test_pytest_collects_the_doctests_of_the_package() -> None:
    options = tomllib.loads(PYPROJECT.read_text())["tool"]["pytest"]["ini_options"]
    assert "flexrec" in options["testpaths"]
    assert "--doctest-modules" in options["addopts"].split()
    assert {"NORMALIZE_WHITESPACE", "ELLIPSIS"} <= set(options["doctest_optionflags"])


@pytest.mark.parametrize("name", MODULES_WITH_EXAMPLES)
def test_module_has_worked_examples(name: str) -> None:
    found = doctest.DocTestFinder().find(importlib.import_module(name))
    assert sum(len(test.examples) for test in found) > 0
