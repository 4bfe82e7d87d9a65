"""Plug-in discovery through real entry points of installed distributions (no pluggy mocks)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from flexrec.errors import PluginError
from flexrec.plugin.manager import (
    BUILTIN_PLUGINS,
    disabled_plugins,
    get_plugin_manager,
    load_plugins,
    plugin_distribution,
    plugin_generation,
    reset_plugin_manager,
)
from flexrec.registry import registries


def test_builtins_load_lazily_and_register() -> None:
    import flexrec.plugin.manager as manager

    assert manager._state.pm is None  # nothing loaded before first use
    assert {"swap", "sequence"} <= set(registries.reward.names())
    assert {"grpo", "ua_grpo"} <= set(registries.estimator.names())
    for module in BUILTIN_PLUGINS:
        assert get_plugin_manager().get_plugin(module) is not None
        assert plugin_distribution(module)[0] == "flexrec"


def test_entry_point_plugin_is_discovered(installed_plugin: Callable[..., Path]) -> None:
    installed_plugin()
    entry = {e.name: e for e in registries.reward.entries()}["top_heavy"]
    assert entry.module == "flexrec_tiny_plugin"
    assert (entry.distribution, entry.version) == ("flexrec-tiny", "1.2.3")
    reward = registries.reward.build("top_heavy")
    assert type(reward).__name__ == "TopHeavyReward"


def test_disable_autoload(installed_plugin: Callable[..., Path], monkeypatch) -> None:
    installed_plugin()
    monkeypatch.setenv("FLEXREC_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "top_heavy" not in registries.reward.names()
    assert "swap" in registries.reward.names()


@pytest.mark.parametrize("name", ["tiny", "flexrec-tiny"])
def test_disabled_by_entry_point_or_distribution(
    installed_plugin: Callable[..., Path], monkeypatch, name: str
) -> None:
    installed_plugin()
    monkeypatch.setenv("FLEXREC_DISABLED_PLUGINS", f"other, {name}")
    assert "top_heavy" not in registries.reward.names()
    assert disabled_plugins() == ["tiny (flexrec-tiny 1.2.3)"]


def test_broken_plugin_names_entry_point_and_distribution(
    installed_plugin: Callable[..., Path],
) -> None:
    installed_plugin(source="import does_not_exist_anywhere\n")
    with pytest.raises(PluginError) as info:
        registries.reward.names()
    message = str(info.value)
    assert "'tiny'" in message and "flexrec-tiny 1.2.3" in message
    assert "does_not_exist_anywhere" in message and "\n" not in message


def test_duplicate_name_names_both_modules(installed_plugin: Callable[..., Path]) -> None:
    installed_plugin(reward_name="swap")
    with pytest.raises(PluginError, match="duplicate reward name 'swap'") as info:
        registries.reward.names()
    assert "flexrec.rewards.builtin" in str(info.value)
    assert "flexrec_tiny_plugin" in str(info.value)


def test_misspelt_hook_fails_check_pending(installed_plugin: Callable[..., Path]) -> None:
    installed_plugin(
        source="from flexrec.plugin import hookimpl\n\n"
        "@hookimpl\ndef flexrec_register_reward():\n    return []\n"
    )
    with pytest.raises(PluginError, match="flexrec_register_reward"):
        registries.reward.names()


def test_modules_from_env_and_config(tmp_path: Path, monkeypatch, plugin_source: str) -> None:
    for name in ("env_plugin", "cfg_plugin"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    (tmp_path / "env_plugin.py").write_text(plugin_source.format(reward_name="from_env"))
    (tmp_path / "cfg_plugin.py").write_text(plugin_source.format(reward_name="from_config"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FLEXREC_PLUGINS", "env_plugin")
    assert "from_env" in registries.reward.names()
    assert "from_config" not in registries.reward.names()
    assert load_plugins(["cfg_plugin", "env_plugin"]) == ["cfg_plugin"]
    assert "from_config" in registries.reward.names()
    unpackaged = {e.name: e for e in registries.reward.entries()}["from_config"]
    assert unpackaged.distribution is None


def test_missing_config_module_is_a_plugin_error() -> None:
    with pytest.raises(PluginError, match="'no_such_plugin_module' failed to import"):
        load_plugins(["no_such_plugin_module"])


def test_cli_lists_plugins_in_a_fresh_process(installed_plugin: Callable[..., Path]) -> None:
    root = installed_plugin()
    env = {**os.environ, "PYTHONPATH": str(root), "FLEXREC_TRACE_PLUGINS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "flexrec.cli", "plugins"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[1]: line for line in proc.stdout.splitlines()[1:] if line.strip()}
    assert (
        "flexrec_tiny_plugin" in lines["top_heavy"] and "flexrec-tiny 1.2.3" in lines["top_heavy"]
    )
    assert "flexrec.rewards.builtin" in lines["swap"]
    assert "flexrec_register_rewards" in proc.stderr  # FLEXREC_TRACE_PLUGINS traced the hook


def test_cli_broken_plugin_exits_2_with_one_line(installed_plugin: Callable[..., Path]) -> None:
    root = installed_plugin(source="raise RuntimeError('boom at import')\n")
    proc = subprocess.run(
        [sys.executable, "-m", "flexrec.cli", "plugins"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "boom at import" in proc.stderr
    assert proc.stderr.startswith("flexrec: error: plug-in entry point 'tiny'")


def test_registries_follow_the_plugin_generation(
    tmp_path: Path, monkeypatch, plugin_source: str
) -> None:
    monkeypatch.delitem(sys.modules, "late_plugin", raising=False)
    (tmp_path / "late_plugin.py").write_text(plugin_source.format(reward_name="late"))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "late" not in registries.reward.names()
    monkeypatch.setenv("FLEXREC_PLUGINS", "late_plugin")
    assert "late" not in registries.reward.names()  # loaded entries stay while the set is unchanged
    before = plugin_generation()
    reset_plugin_manager()  # the manager knows nothing of registries; they notice the change
    assert plugin_generation() == before + 1
    assert "late" in registries.reward.names()
    assert load_plugins(["late_plugin"]) == [] and plugin_generation() == before + 1
