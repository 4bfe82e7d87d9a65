"""The example plug-in (plugins/flexrec-example), installed by `make setup`, end to end.

Discovery through its entry point, `flexrec plugins`, disabling, and a `flexrec fit` that trains with
its reward and estimator. The plug-in's own unit and contract tests live in
plugins/flexrec-example/tests (run by `make test`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from flexrec.errors import ConfigError
from flexrec.plugin.manager import disabled_plugins
from flexrec.registry import registries

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "plugins" / "flexrec-example"
SYNTHETIC = REPO / "configs" / "synthetic.yaml"
SMALL = (
    "--data.init_args.num_train=64",
    "--data.init_args.num_val=32",
    "--data.init_args.batch_size=16",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
)


def _installed() -> bool:
    try:
        metadata.distribution("flexrec-example")
    except metadata.PackageNotFoundError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _installed(),
    reason="flexrec-example is not installed: run `make setup` "
    "(or pip install -c constraints.txt -e plugins/flexrec-example)",
)


def _flexrec(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLEXREC_")}
    proc = subprocess.run(
        [sys.executable, "-m", "flexrec.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**base, "PYTHONWARNINGS": "ignore", **(env or {})},
        timeout=600,
        check=False,
    )
    return proc


def test_discovered_through_its_entry_point() -> None:
    (ep,) = [e for e in metadata.entry_points(group="flexrec") if e.name == "example"]
    assert ep.value == "flexrec_example.plugin"
    entries = {
        (e.name, e.plugin, e.distribution, e.version, e.module)
        for registry in registries
        for e in registry.entries()
        if e.plugin == "example"
    }
    assert entries == {
        ("diverse_swap", "example", "flexrec-example", "0.1.0", "flexrec_example.rewards"),
        ("rloo_ua", "example", "flexrec-example", "0.1.0", "flexrec_example.estimators"),
        ("hidden_gems", "example", "flexrec-example", "0.1.0", "flexrec_example.needs"),
        (
            "pairwise_logistic",
            "example",
            "flexrec-example",
            "0.1.0",
            "flexrec_example.objectives",
        ),
    }
    reward = registries.reward.build({"name": "diverse_swap", "args": {"cutoff": 5}})
    assert (reward.cutoff, reward.penalty) == (5, 0.1)


def test_disabled_by_entry_point_or_distribution_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from flexrec.plugin.manager import reset_plugin_manager

    for value in ("example", "flexrec-example"):
        monkeypatch.setenv("FLEXREC_DISABLED_PLUGINS", value)
        reset_plugin_manager()
        assert "diverse_swap" not in registries.reward.names()
        assert "swap" in registries.reward.names()
        assert disabled_plugins() == ["example (flexrec-example 0.1.0)"]
        with pytest.raises(ConfigError, match="unknown estimator 'rloo_ua'"):
            registries.estimator.build("rloo_ua")


def test_flexrec_plugins_lists_it_and_shows_it_disabled(tmp_path: Path) -> None:
    proc = _flexrec("plugins", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {tuple(line.split()) for line in proc.stdout.splitlines()}
    assert ("reward", "diverse_swap", "flexrec_example.rewards", "flexrec-example", "0.1.0") in rows
    assert (
        "estimator",
        "rloo_ua",
        "flexrec_example.estimators",
        "flexrec-example",
        "0.1.0",
    ) in rows
    assert ("need", "hidden_gems", "flexrec_example.needs", "flexrec-example", "0.1.0") in rows
    objective = ("pairwise_logistic", "flexrec_example.objectives", "flexrec-example", "0.1.0")
    assert ("objective", *objective) in rows
    assert "disabled:" not in proc.stdout

    off = _flexrec("plugins", cwd=tmp_path, env={"FLEXREC_DISABLED_PLUGINS": "example"})
    assert off.returncode == 0, off.stderr[-2000:]
    assert "diverse_swap" not in off.stdout and "rloo_ua" not in off.stdout
    assert off.stdout.splitlines()[-1] == "disabled: example (flexrec-example 0.1.0)"


def test_fit_trains_with_its_reward_and_estimator(tmp_path: Path) -> None:
    root = tmp_path / "run"
    args = (
        "fit",
        f"--config={SYNTHETIC}",
        f"--trainer.default_root_dir={root}",
        "--trainer.max_epochs=1",
        "--model.reward={name: diverse_swap, args: {cutoff: 5, penalty: 0.05}}",
        "--model.estimator={name: rloo_ua, args: {clip: 5.0}}",
        *SMALL,
    )
    proc = _flexrec(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = root / "logs" / "version_0"
    record = json.loads((run_dir / "run.json").read_text())
    model = record["config"]["model"]
    assert model["reward"] == {"name": "diverse_swap", "args": {"cutoff": 5, "penalty": 0.05}}
    assert model["estimator"] == {"name": "rloo_ua", "args": {"clip": 5.0}}
    assert "example (flexrec-example 0.1.0)" in record["plugins"]
    fit = record["metrics"]["fit"]
    assert fit["train/loss"] == fit["train/loss"]  # finite, not NaN
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()

    # the same run with the plug-in disabled stops before training, naming the valid rewards
    off = _flexrec(*args, cwd=tmp_path, env={"FLEXREC_DISABLED_PLUGINS": "flexrec-example"})
    assert off.returncode == 2
    assert "unknown reward 'diverse_swap'" in off.stderr


def test_its_suite_uses_flexrecs_pytest_plugin_not_a_copy() -> None:
    """The plug-in-manager fixture comes from flexrec (pytest11 entry point), never a local copy."""
    pyproject = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    options = pyproject["tool"]["pytest"]["ini_options"]
    assert "flexrec_fresh_plugins" in options["usefixtures"]
    assert "--doctest-modules" in options["addopts"].split()
    conftest = EXAMPLE / "tests" / "conftest.py"
    assert not conftest.exists() or "reset_plugin_manager" not in conftest.read_text()
    for path in (EXAMPLE / "tests").glob("*.py"):
        assert "@pytest.fixture(autouse=True)" not in path.read_text(), path
