"""Grid cells that warm-start from another cell's fit (``init_from``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from flexrec.benchmark.grid import load_grid
from flexrec.benchmark.runner import plan, run_grid, validate_grid
from flexrec.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

GRID = f"""
base: {REPO / "configs" / "synthetic.yaml"}
seeds: [0]
commands: [fit]
set:
  trainer.max_epochs: 1
  trainer.enable_model_summary: false
  trainer.limit_val_batches: 0
  trainer.num_sanity_val_steps: 0
  data.init_args.num_train: 32
  data.init_args.num_val: 16
  data.init_args.batch_size: 16
  model.group_size: 2
cells:
  supervised:
    set: {{model.objective: listmle}}
  rl:
    set: {{model.policy: {{name: native, args: {{dim: 32, seed: 5}}}}}}
    init_from: supervised
  rl_again:
    init_from: rl
"""


def _grid(tmp_path: Path, text: str = GRID) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def test_init_from_links_cells_and_orders_them_in_waves(tmp_path: Path) -> None:
    grid = load_grid(_grid(tmp_path))
    cells = {c.name: c for c in grid.cells}
    assert cells["rl"].init_from == "supervised" and cells["supervised"].init_from is None
    assert [(c.name, grid.depth(c)) for c in grid.cells] == [
        ("base", 0),
        ("supervised", 0),
        ("rl", 1),
        ("rl_again", 2),
    ]
    assert validate_grid(grid) == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            "init_from: rl_again\n",
            "cell 'rl': init_from 'rl_again': the init_from links form a cycle",
        ),
        ("init_from: nope\n", "init_from 'nope' is not a cell of the grid"),
        ("init_from: supervised\n    commands: [test]\n", "both cells must run `fit`"),
    ],
)
def test_bad_init_from_is_a_config_error(tmp_path: Path, change: str, message: str) -> None:
    text = GRID.replace("init_from: supervised\n", change)
    with pytest.raises(ConfigError, match=message):
        load_grid(_grid(tmp_path, text))


def test_a_cell_fits_from_the_checkpoint_of_its_init_from_cell(tmp_path: Path) -> None:
    grid = load_grid(_grid(tmp_path, GRID.split("  rl_again:")[0]))
    out = tmp_path / "out"
    assert run_grid(grid, out, pattern="supervised") == (1, 0)
    assert run_grid(grid, out, pattern="rl") == (1, 0)
    first = json.loads((out / "results" / "supervised" / "seed0.json").read_text())
    second = json.loads((out / "results" / "rl" / "seed0.json").read_text())
    checkpoint = Path(first["log_dirs"]["fit"]) / "checkpoints" / "last.ckpt"
    config = OmegaConf.load(out / "runs" / "rl" / "seed0" / "cell.yaml")
    assert config.model.init_from == str(checkpoint.resolve())
    assert second["init_from"] == "supervised" and "train/clip_fraction" in second["metrics"]["fit"]
    assert "train/positions" in first["metrics"]["fit"]
    # the warm start happened: the RL cell's policy is initialised from another seed, but its
    # reference network (never trained, loaded with the policy) is the supervised run's
    supervised = torch.load(checkpoint, weights_only=False)["state_dict"]
    rl = torch.load(
        Path(second["log_dirs"]["fit"]) / "checkpoints" / "last.ckpt", weights_only=False
    )["state_dict"]
    references = [k for k in supervised if k.startswith("policy.reference.")]
    assert references
    for key in references:
        assert torch.equal(rl[key], supervised[key]), key


def test_a_cell_whose_source_has_not_run_fails_with_a_clear_message(tmp_path: Path) -> None:
    grid = load_grid(_grid(tmp_path, GRID.split("  rl_again:")[0]))
    from flexrec.errors import FlexRecError

    with pytest.raises(FlexRecError, match="cell 'supervised' seed 0 has no finished fit"):
        run_grid(grid, tmp_path / "out", pattern="rl")


def test_a_cell_may_run_a_subset_of_the_grid_seeds(tmp_path: Path) -> None:
    text = GRID.replace("seeds: [0]", "seeds: [0, 1, 2]").replace(
        "    init_from: rl\n", "    init_from: rl\n    seeds: [2, 0]\n"
    )
    grid = load_grid(_grid(tmp_path, text))
    runs = plan(grid, tmp_path / "out")
    assert [(r.cell.name, r.seed) for r in runs if r.cell.name == "rl_again"] == [
        ("rl_again", 2),
        ("rl_again", 0),
    ]
    assert len(runs) == 3 * 3 + 2


@pytest.mark.parametrize(
    ("rl_seeds", "again_seeds", "message"),
    [
        ("", "[3]", r"cell 'rl_again': seeds must be distinct seeds of the grid \[0, 1\]"),
        ("", "[0, 0]", "seeds must be distinct seeds of the grid"),
        ("", "[]", "seeds must be distinct seeds of the grid"),
        ("    seeds: [0]\n", "[1]", r"cell 'rl_again': init_from 'rl' does not run seeds \[1\]"),
    ],
)
def test_bad_cell_seeds_are_config_errors(
    tmp_path: Path, rl_seeds: str, again_seeds: str, message: str
) -> None:
    text = GRID.replace("seeds: [0]", "seeds: [0, 1]")
    text = text.replace("    init_from: supervised\n", "    init_from: supervised\n" + rl_seeds)
    text = text.replace("    init_from: rl\n", f"    init_from: rl\n    seeds: {again_seeds}\n")
    with pytest.raises(ConfigError, match=message):
        load_grid(_grid(tmp_path, text))


def test_a_validate_before_fit_is_the_curve_start_and_scores_the_init_from_model(
    tmp_path: Path,
) -> None:
    text = GRID.split("  rl:")[0].replace(
        "    set: {model.objective: listmle}\n",
        "    set: {model.objective: listmle, trainer.limit_val_batches: 1.0}\n"
        "    commands: [fit, validate]\n",
    )
    text += (
        "  curve:\n"
        "    set: {trainer.limit_val_batches: 1.0}\n"
        "    commands: [validate, fit]\n"
        "    init_from: supervised\n"
    )
    grid = load_grid(_grid(tmp_path, text))
    out = tmp_path / "out"
    assert run_grid(grid, out, pattern="supervised") == (1, 0)
    assert run_grid(grid, out, pattern="curve") == (1, 0)
    supervised = json.loads((out / "results" / "supervised" / "seed0.json").read_text())
    curve = json.loads((out / "results" / "curve" / "seed0.json").read_text())
    key = "val/ndcg@5/maximize_interest"
    trained = supervised["metrics"]["validate"][key]  # the supervised fit's last checkpoint
    points = curve["curves"][key]
    # validate without a checkpoint of its own evaluated the init_from model: the 0-task point
    assert points[0] == [0.0, pytest.approx(trained, abs=1e-6), 0.0]
    assert curve["metrics"]["validate"][key] == pytest.approx(trained, abs=1e-6)
    assert len(points) > 2 and all(p[2] > 0 for p in points[1:])
    assert [p[2] for p in points[1:]] == sorted(p[2] for p in points[1:])
