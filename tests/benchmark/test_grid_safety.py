"""flexrec-bench safety: cell names and seeds that become paths, a lock per output folder, no run
left behind by a killed runner, and what ``--dry-run`` catches."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flexrec.benchmark.cli import main
from flexrec.benchmark.grid import load_grid
from flexrec.benchmark.runner import output_lock, plan
from flexrec.data.loaders import EMBEDDED_DIR

REPO = Path(__file__).resolve().parents[2]
SYNTHETIC = REPO / "configs" / "synthetic.yaml"
QUICKSTART = REPO / "configs" / "quickstart.yaml"

TINY = f"""
base: {SYNTHETIC}
seeds: [0]
commands: [fit]
set:
  trainer.max_epochs: 2
  trainer.enable_model_summary: false
  data.init_args.num_train: 64
  data.init_args.num_val: 16
  data.init_args.batch_size: 16
axes:
  model.estimator: [grpo]
"""


def _grid(tmp_path: Path, text: str = TINY) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def _one_line(capsys: pytest.CaptureFixture[str], status: int, *parts: str) -> str:
    assert status == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("flexrec-bench: error: "), lines[0]
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("name", ["../escape", "/tmp/abs", "a/b", ".hidden", "..", "with space"])
def test_unsafe_cell_names_are_refused_before_any_file_is_touched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    grid = _grid(tmp_path, TINY + f'cells:\n  "{name}": {{}}\n')
    out = tmp_path / "out"
    status = main(["--grid", str(grid), "--out", str(out)])
    _one_line(capsys, status, f"cell name {name!r} cannot be a folder name")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.yaml"]


def test_a_dataset_path_on_an_axis_is_labelled_by_its_name_and_not_written_into(
    tmp_path: Path,
) -> None:
    data = tmp_path / "datasets" / "ml-copy"
    shutil.copytree(EMBEDDED_DIR / "ml-latest-small", data)
    grid = load_grid(
        _grid(tmp_path, f"base: {QUICKSTART}\naxes:\n  data.init_args.dataset: [{data}]\n")
    )
    assert [c.name for c in grid.cells] == ["ml-copy"]
    (run,) = plan(grid, tmp_path / "out")
    # before: runs/<absolute path>/seed0 was the dataset folder itself, cleared before each run
    assert run.run_dir == tmp_path / "out" / "runs" / "ml-copy" / "seed0"
    assert run.result_path.is_relative_to(tmp_path / "out" / "results")
    assert main(["--grid", str(grid.path), "--dry-run"]) == 0


def test_the_runner_clears_nothing_outside_its_output_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "seed0").mkdir()
    (precious / "seed0" / "keep.txt").write_text("data")
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    (out / "runs" / "grpo").symlink_to(precious)  # a link on the way out of the output folder
    status = main(["--grid", str(_grid(tmp_path)), "--out", str(out)])
    _one_line(capsys, status, "is not inside", "refusing to write there")
    assert (precious / "seed0" / "keep.txt").read_text() == "data"


@pytest.mark.parametrize(
    "seeds", ["3", "[a]", "[1, 1]", "[-1]", "[true]", "[]", "[0.5]", "[4294967296]"]
)
def test_seeds_of_the_wrong_type_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], seeds: str
) -> None:
    grid = _grid(tmp_path, TINY.replace("seeds: [0]", f"seeds: {seeds}"))
    _one_line(capsys, main(["--grid", str(grid), "--dry-run"]), "grid.yaml: seeds must be")


@pytest.mark.parametrize(
    ("base", "axis", "message"),
    [
        (SYNTHETIC, "trainer.max_epoch: [1]", "Group 'trainer' does not accept option 'max_epoch'"),
        (SYNTHETIC, "modle.lr: [0.1]", "Option 'modle.lr' is not accepted"),
        (SYNTHETIC, "data.init_args.num_trains: [3]", "Option 'num_trains' is not accepted"),
        (SYNTHETIC, "model.group_size: [0]", "group_size must be >= 1, got 0"),
        (SYNTHETIC, "data.init_args.batch_size: [0]", "batch_size must be >= 1, got 0"),
        (SYNTHETIC, "model.lr: [fast]", 'Parser key "model.lr"'),
        (QUICKSTART, "data.init_args.dataset: [ml-latest-smal]", "unknown dataset"),
        (QUICKSTART, "data.init_args.history_len: [-1]", "history_len must be >= 0, got -1"),
        (QUICKSTART, "data.init_args.num_candidates: [1]", "num_candidates must be >= 2, got 1"),
        (QUICKSTART, "data.init_args.needs: [[]]", "needs is empty"),
    ],
)
def test_dry_run_catches_misspelt_keys_bad_numbers_and_unknown_datasets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], base: Path, axis: str, message: str
) -> None:
    grid = _grid(tmp_path, f"base: {base}\naxes:\n  {axis}\n")
    _one_line(capsys, main(["--grid", str(grid), "--dry-run"]), "error: cell '", message)


def test_a_yaml_syntax_error_names_the_grid_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = _grid(tmp_path, TINY.replace("seeds: [0]", "seeds: [0"))
    _one_line(capsys, main(["--grid", str(grid), "--dry-run"]), f"{grid}: not valid YAML (line")
    base = tmp_path / "base.yaml"
    base.write_text("model: {group_size: 2\n")
    grid = _grid(tmp_path, f"base: {base}\n")
    _one_line(capsys, main(["--grid", str(grid), "--dry-run"]), f"base config {base}: not valid")


def test_a_second_runner_on_the_same_output_folder_exits_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    with output_lock(out):  # a real flock, held through another open file
        start = time.monotonic()
        status = main(["--grid", str(_grid(tmp_path)), "--out", str(out)])
        _one_line(capsys, status, f"{out} is in use by another flexrec-bench (pid {os.getpid()})")
        assert time.monotonic() - start < 30
    assert not (out / "runs").exists()


def test_an_output_folder_that_cannot_be_written_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "out"
    status = main(["--grid", str(_grid(tmp_path)), "--out", str(out)])
    _one_line(capsys, status, f"cannot write {out}: Not a directory")


# ---------------------------------------------------------------- killing the runner


def _bench(*args: str) -> list[str]:
    return [sys.executable, "-m", "flexrec.benchmark.cli", *args]


ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _report(out: Path) -> tuple[str, str]:
    """``results.csv`` and ``report.md`` without its title (the grid's path) and run time."""
    report = re.sub(r"[\d.]+ min of run time", "", (out / "report.md").read_text())
    report = re.sub(r"^# flexrec-bench: .*$", "", report, flags=re.MULTILINE)
    return (out / "results.csv").read_text(), report


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    grid, out = _grid(tmp), tmp / "out"
    proc = subprocess.run(
        _bench("--grid", str(grid), "--out", str(out)), env=ENV, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _report(out)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["SIGTERM", "SIGINT", "SIGKILL"]
)
def test_a_killed_runner_leaves_no_run_behind_and_a_rerun_gives_the_same_report(
    tmp_path: Path, uninterrupted: tuple[str, str], sig: signal.Signals
) -> None:
    grid, out = _grid(tmp_path), tmp_path / "out"
    runner = subprocess.Popen(
        _bench("--grid", str(grid), "--out", str(out)),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    children: list[int] = []
    while not children and time.time() < deadline and runner.poll() is None:
        time.sleep(0.05)
        children = _children(runner.pid)
    assert children and runner.poll() is None, "the runner never started its training process"
    runner.send_signal(sig)
    _, err = runner.communicate(timeout=60)
    assert runner.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 130), err
    if sig != signal.SIGKILL:
        assert err.strip().splitlines() == ["flexrec-bench: interrupted"]
    deadline = time.time() + 20
    while any(_alive(pid) for pid in children) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in children), "a training process outlived its runner"
    assert not list((out / "results").rglob("*.json")) if (out / "results").exists() else True

    rerun = subprocess.run(
        _bench("--grid", str(grid), "--out", str(out)), env=ENV, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    # stdout is not a terminal: one progress line per finished run
    assert "1 runs, 0 already finished" in rerun.stdout
    assert "[1/1] grpo seed 0: done" in rerun.stdout
    assert _report(out) == uninterrupted
