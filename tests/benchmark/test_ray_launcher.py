"""``flexrec-bench --launcher ray`` on a local Ray instance: the same results and report as the
local launcher, resume after a SIGKILL without repeating finished runs or leaving a run behind,
resources checked against the cluster, one-line errors."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flexrec.benchmark.cli import main
from flexrec.benchmark.grid import load_grid

pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[2]
SYNTHETIC = REPO / "configs" / "synthetic.yaml"

GRID = f"""
base: {SYNTHETIC}
seeds: [0, 1]
commands: [fit, test]
resources: {{cpus: 1}}
set:
  trainer.max_epochs: 2
  trainer.enable_model_summary: false
  data.init_args.num_train: 64
  data.init_args.num_val: 16
  data.init_args.batch_size: 16
  model.group_size: 2
axes:
  model.reward: [sequence, swap]
reference: sequence
"""

ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "RAY_ADDRESS": ""}


def _bench(*args: str) -> list[str]:
    return [sys.executable, "-m", "flexrec.benchmark.cli", *args]


def _grid(tmp_path: Path, text: str = GRID) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def _report(out: Path) -> tuple[str, str, str]:
    """``results.csv``, ``paired.csv`` and ``report.md`` without its title and run time."""
    report = re.sub(r"[\d.]+ min of run time", "", (out / "report.md").read_text())
    report = re.sub(r"^# flexrec-bench: .*$", "", report, flags=re.MULTILINE)
    return (out / "results.csv").read_text(), (out / "paired.csv").read_text(), report


def _training_processes(out: Path) -> list[int]:
    """Live ``flexrec`` processes of this grid (started by Ray workers, not by the runner)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if "flexrec.benchmark.child" in text and str(out) in text and state not in ("Z", "X"):
            found.append(int(cmdline.parent.name))
    return found


@pytest.fixture(scope="module")
def local_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    tmp = tmp_path_factory.mktemp("local")
    out = tmp / "out"
    proc = subprocess.run(
        _bench("--grid", str(_grid(tmp)), "--out", str(out), "--jobs", "2"),
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _report(out)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc")
def test_ray_gives_the_local_report_and_resumes_after_a_kill(
    tmp_path: Path, local_report: tuple[str, str, str]
) -> None:
    grid, out = _grid(tmp_path), tmp_path / "out"
    cmd = _bench("--grid", str(grid), "--out", str(out), "--launcher", "ray")
    runner = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    results = out / "results"
    deadline = time.time() + 900  # generous: CI machines may be busy
    while not list(results.glob("*/*.json")) and time.time() < deadline:
        assert runner.poll() is None, runner.communicate()[1][-2000:]
        time.sleep(0.1)
    finished = {p: p.stat().st_mtime_ns for p in results.glob("*/*.json")}
    assert 1 <= len(finished) < 4, "the grid finished before it could be killed"
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    deadline = time.time() + 120  # Ray ends the dead driver's tasks, and their processes die too
    while _training_processes(out) and time.time() < deadline:
        time.sleep(0.2)
    assert not _training_processes(out), "a training process outlived the killed runner"

    rerun = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    done = len(list(results.glob("*/*.json"))) - len(finished)
    assert f"4 runs, {len(finished)} already finished" in rerun.stdout
    assert f"{4 - len(finished)} runs done, {len(finished)} already finished" in rerun.stdout
    assert done == 4 - len(finished)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # not rerun
    # deterministic runs: the same numbers, paired differences and report as the local launcher
    assert _report(out) == local_report


@pytest.mark.slow
def test_a_run_asking_more_than_the_cluster_has_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "")
    text = GRID.replace("resources: {cpus: 1}", "resources: {cpus: 1, gpus: 1}")
    out = tmp_path / "out"
    status = main(["--grid", str(_grid(tmp_path, text)), "--out", str(out), "--launcher", "ray"])
    assert status == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == [
        "flexrec-bench: error: cell 'sequence' asks for 1 GPUs per run; the Ray cluster has 0"
    ]
    assert not (out / "results").exists() or not list((out / "results").rglob("*.json"))


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ("{cpus: 0}", "resources.cpus must be > 0"),
        ("{gpus: -1}", "resources must map cpus, gpus, memory_gb to numbers >= 0"),
        ("{disk: 3}", "resources must map cpus, gpus, memory_gb to numbers >= 0"),
        ("4", "resources must map"),
    ],
)
def test_bad_resources_are_config_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], resources: str, message: str
) -> None:
    text = GRID.replace("resources: {cpus: 1}", f"resources: {resources}")
    assert main(["--grid", str(_grid(tmp_path, text)), "--dry-run"]) == 2
    assert message in capsys.readouterr().err


def test_cells_inherit_and_override_the_grid_resources(tmp_path: Path) -> None:
    text = GRID.replace("reference: sequence", "cells:\n  big:\n    resources: {memory_gb: 2}\n")
    grid = load_grid(_grid(tmp_path, text))
    by_name = {c.name: c.resources for c in grid.cells}
    assert by_name["swap"] == {"cpus": 1.0, "gpus": 0.0, "memory_gb": 0.0}
    assert by_name["big"] == {"cpus": 1.0, "gpus": 0.0, "memory_gb": 2.0}


def test_without_ray_the_launcher_names_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    status = main(
        ["--grid", str(_grid(tmp_path)), "--out", str(tmp_path / "o"), "--launcher", "ray"]
    )
    assert status == 2
    assert "pip install 'flexrec[ray]'" in capsys.readouterr().err
