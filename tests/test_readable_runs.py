"""Readable runs: fit/validate/test end with a compact summary and the run's paths, the console
carries no warning a user cannot act on, and every subcommand's --help works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flexrec.cli import main

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
SMALL = [
    "--trainer.max_epochs=1",
    "--data.init_args.max_train_tasks=64",
    "--data.init_args.max_eval_tasks=40",
]
NOISE = [
    "JsonargparseWarning",
    "module(s) in eval mode",
    "litlogger",
    "LeafSpec",
    "dirpath has changed",
    "Test metric",  # Lightning's table of every logged value
]


def _flexrec(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"
    }  # warnings as users see them
    return subprocess.run(
        [sys.executable, "-m", "flexrec.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
    )


def _quiet(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    for text in NOISE:
        assert text not in proc.stderr + proc.stdout, (text, proc.stderr[-3000:])


def _table(stdout: str, title: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    return lines[start + 1 : start + 6]


@pytest.mark.slow
def test_fit_and_test_end_with_the_summary_and_the_paths(tmp_path: Path) -> None:
    fit = _flexrec("fit", f"--config={QUICKSTART}", *SMALL, cwd=tmp_path)
    _quiet(fit)
    head, *rows = _table(fit.stdout, "flexrec fit: last validation metrics after 2 training steps")
    assert head.split()[:3] == ["need", "maximize_interest", "(40"]
    assert head.split()[-4:] == ["ndcg@5", "ndcg@10", "recall@10", "mrr@10"]
    assert [r.split()[0] for r in rows] == ["policy", "oracle", "random", "popularity"]
    assert rows[1].split()[1:3] == ["1.000", "1.000"]  # the oracle's NDCG
    run = Path("runs/quickstart/logs/version_0")
    expected = [
        f"run folder   {run}",
        f"checkpoints  best: {run}/checkpoints/epoch=0-step=2.ckpt (no metric monitored: the latest)",
        f"             last: {run}/checkpoints/last.ckpt",
        f"logs         {run}/metrics.csv (CSV)",
        "             tensorboard --logdir runs/quickstart/logs (TensorBoard)",
        "record       run.json, tasks_val.csv (in the run folder)",
    ]
    assert fit.stdout.splitlines()[-6:] == expected
    for line in expected[:4]:
        path = line.split()[-1] if "best:" not in line else line.split()[2]
        assert (tmp_path / path.removesuffix(":")).exists() or "(CSV)" in line

    ckpt = run / "checkpoints" / "last.ckpt"
    test = _flexrec("test", f"--config={QUICKSTART}", *SMALL, f"--ckpt_path={ckpt}", cwd=tmp_path)
    _quiet(test)
    head, *rows = _table(test.stdout, "flexrec test: test metrics")
    assert head.startswith("need maximize_interest (40 tasks)")
    assert [r.split()[0] for r in rows] == ["policy", "oracle", "random", "popularity"]
    other = Path("runs/quickstart/logs/version_1")
    assert test.stdout.splitlines()[-5:] == [
        f"run folder   {other}",
        f"evaluated    {ckpt}",
        f"logs         {other}/metrics.csv (CSV)",
        "             tensorboard --logdir runs/quickstart/logs (TensorBoard)",
        "record       run.json, tasks_test.csv (in the run folder)",
    ]


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["plugins"],
        ["data"],
        ["data", "download"],
        ["fit"],
        ["validate"],
        ["test"],
        ["predict"],
        ["serve"],
        ["export"],
    ],
    ids=lambda c: " ".join(c) or "flexrec",
)
def test_every_subcommand_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # `flexrec data info --help` belongs to the data-command rework (another change)
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    usage = out.splitlines()[0]
    assert usage.startswith("usage: flexrec"), usage
    if command and command[0] in ("fit", "validate", "test", "predict"):
        assert usage.startswith(f"usage: flexrec [options] {command[0]}"), usage
        assert "The data module: data.class_path names it" in out
        assert "A DataModule standardizes" not in out
    elif command:
        assert usage.startswith(f"usage: flexrec {' '.join(command)}"), usage
