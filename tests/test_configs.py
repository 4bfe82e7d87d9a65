"""Every ready config in configs/ parses, names valid components, and the sparse one trains.

The sparse KuaiRec config trains on the simulator over made-up KuaiRec tag tables
(:func:`flexrec.testing.fakes.fake_kuairec_side`), so no test here needs the real data files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flexrec.benchmark.grid import load_grid
from flexrec.benchmark.runner import validate_grid
from flexrec.testing.fakes import fake_kuairec_side

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_the_documented_configs_exist() -> None:
    names = {p.name for p in CONFIGS}
    assert {"quickstart.yaml", "smollm2.yaml", "kuairec_sim_sparse.yaml", "synthetic.yaml"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_components_are_valid(config: Path, tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"base: {config}\n")
    assert validate_grid(load_grid(grid)) == 1
    proc = subprocess.run(
        [sys.executable, "-m", "flexrec.cli", "fit", f"--config={config}", "--print_config"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "model:" in proc.stdout and "class_path:" in proc.stdout


@pytest.mark.slow
def test_sparse_kuairec_with_the_critic_trains_and_evaluates(tmp_path: Path) -> None:
    # the simulator reads $FLEXREC_DATA_DIR/kuairec-side: made-up tag tables do (no real files)
    data_dir = tmp_path / "data"
    fake_kuairec_side(data_dir / "kuairec-side")
    root = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flexrec.cli",
            "fit",
            f"--config={REPO / 'configs' / 'kuairec_sim_sparse.yaml'}",
            "--trainer.max_epochs=1",
            "--trainer.enable_progress_bar=false",
            "--data.init_args.max_train_tasks=64",
            "--data.init_args.max_eval_tasks=30",
            "--model.feedback={name: critic, args: {members: 2, epochs: 3}}",
            f"--trainer.default_root_dir={root}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "FLEXREC_DATA_DIR": str(data_dir)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((root / "logs" / "version_0" / "run.json").read_text())["metrics"]["fit"]
    for need in ("maximize_interest", "explore_new_topics", "trend_promotion"):
        assert 0.0 <= metrics[f"val/ndcg@5/{need}"] <= 1.0
        assert metrics[f"val_oracle/ndcg@5/{need}"] == pytest.approx(1.0)
