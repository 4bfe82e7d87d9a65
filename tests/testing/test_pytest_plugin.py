"""flexrec's pytest plug-in (:mod:`flexrec.testing.pytest_plugin`), as a plug-in package sees it."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest

import flexrec.testing.pytest_plugin

pytest_plugins = ["pytester"]

PLUGIN = """
from flexrec.plugin import hookimpl
from flexrec.rewards.base import Reward


class Tiny(Reward):
    name = "tiny_reward"

    def item_rewards(self, placed_gains, batch=None):
        return placed_gains


@hookimpl
def flexrec_register_rewards():
    return [Tiny]
"""

TESTS = """
import os

from flexrec.registry import registries


def test_starts_from_a_clean_environment():
    assert not [v for v in os.environ if v.startswith("FLEXREC_") and "PLUGIN" in v]
    assert "tiny_reward" not in registries.reward.names()


def test_loads_a_plugin_for_itself(monkeypatch):
    monkeypatch.setenv("FLEXREC_PLUGINS", "tiny_plugin")
    assert "tiny_reward" in registries.reward.names()


def test_does_not_see_the_previous_tests_plugin():
    assert "tiny_reward" not in registries.reward.names()
    assert "swap" in registries.reward.names()
"""


def test_registered_as_a_pytest11_entry_point(pytestconfig: pytest.Config) -> None:
    (entry,) = [e for e in metadata.entry_points(group="pytest11") if e.name == "flexrec"]
    assert entry.value == "flexrec.testing.pytest_plugin"
    assert pytestconfig.pluginmanager.get_plugin("flexrec") is flexrec.testing.pytest_plugin


def test_importing_it_imports_no_heavy_module() -> None:
    """pytest imports it at start-up in every run where flexrec is installed."""
    heavy = ("torch", "transformers", "lightning", "flexrec.plugin.manager", "flexrec.registry")
    code = (
        "import sys, flexrec.testing.pytest_plugin\n"
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_fresh_plugins_isolates_every_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the outer environment asks for the plug-in and traces hooks: the inner tests never see it
    monkeypatch.setenv("FLEXREC_PLUGINS", "tiny_plugin")
    monkeypatch.setenv("FLEXREC_TRACE_PLUGINS", "1")
    pytester.makepyfile(tiny_plugin=PLUGIN, test_isolation=TESTS)
    pytester.syspathinsert()
    pytester.makeini("[pytest]\nusefixtures = flexrec_fresh_plugins\n")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=3)
    # the fixture comes from the plug-in: without it, no test can start
    pytester.runpytest("-p", "no:cacheprovider", "-p", "no:flexrec").assert_outcomes(errors=3)
