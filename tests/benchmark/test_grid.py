"""flexrec-bench: grid expansion and validation, kill-and-resume, report arithmetic."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from flexrec.benchmark.cli import main
from flexrec.benchmark.grid import load_grid
from flexrec.benchmark.report import aggregate, mean_se, write_report
from flexrec.benchmark.runner import (
    VALIDATION_POINTS,
    _read_curves,
    _records,
    _written_record,
    run_grid,
    validate_grid,
    with_validation_points,
)
from flexrec.errors import ConfigError
from flexrec.run_record import read_task_metrics, write_json_atomic

REPO = Path(__file__).resolve().parents[2]
SYNTHETIC = REPO / "configs" / "synthetic.yaml"

GRID = f"""
base: {SYNTHETIC}
seeds: [0, 1]
commands: [fit]
set:
  trainer.max_epochs: 1
  trainer.enable_model_summary: false
  data.init_args.num_train: 32
  data.init_args.num_val: 16
  data.init_args.batch_size: 16
axes:
  model.reward: [{{name: sequence}}, {{name: swap, args: {{cutoff: 5}}}}]
  model.estimator: [grpo, ua_grpo]
cells:
  short:
    set: {{model.group_size: 2}}
reference: sequence+grpo
"""


def _grid(tmp_path: Path, text: str = GRID) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def test_expansion_names_and_overrides(tmp_path: Path) -> None:
    grid = load_grid(_grid(tmp_path))
    names = [c.name for c in grid.cells]
    assert names == [
        "sequence+grpo",
        "sequence+ua_grpo",
        "swap(cutoff=5)+grpo",
        "swap(cutoff=5)+ua_grpo",
        "short",
    ]
    cfg = grid.cells[2].config(grid.base, seed=1, run_dir=tmp_path / "r")
    assert OmegaConf.to_container(cfg.model.reward) == {"name": "swap", "args": {"cutoff": 5}}
    assert cfg.model.estimator == "grpo" and cfg.seed_everything == 1
    assert cfg.data.init_args.seed == 1 and cfg.data.init_args.num_train == 32
    assert cfg.trainer.default_root_dir == str(tmp_path / "r")
    assert grid.cells[4].config(grid.base, 0, tmp_path).model.group_size == 2
    assert grid.select("swap") == grid.cells[2:4]


def test_bundle_axis_sets_several_keys(tmp_path: Path) -> None:
    text = GRID.replace(
        "  model.estimator: [grpo, ua_grpo]\n",
        "  method:\n"
        "    flexrec: {model.estimator: ua_grpo, model.group_size: 4}\n"
        "    grpo: {model.estimator: grpo}\n",
    )
    grid = load_grid(_grid(tmp_path, text))
    assert [c.name for c in grid.cells][:2] == ["sequence+flexrec", "sequence+grpo"]
    cfg = grid.cells[0].config(grid.base, 0, tmp_path)
    assert cfg.model.estimator == "ua_grpo" and cfg.model.group_size == 4
    assert grid.cells[1].config(grid.base, 0, tmp_path).model.group_size == 8


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("base: nowhere.yaml\n", "base config not found"),
        (GRID.replace("reference: sequence+grpo", "reference: nope"), "reference cell 'nope'"),
        (GRID.replace("axes:", "axis:"), "unknown grid keys ['axis']"),
        (GRID.replace("commands: [fit]", "commands: [fit, predict]"), "bad commands"),
        (GRID.replace("    set: {model.group_size: 2}", "    sett: {}"), "cell 'short' takes only"),
    ],
)
def test_bad_grid_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_grid(_grid(tmp_path, text))


def test_dry_run_fails_on_the_bad_cell_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = GRID.replace("[grpo, ua_grpo]", "[grpo, {name: ua_grpo, args: {normalise: batch}}]")
    assert main(["--grid", str(_grid(tmp_path, bad)), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("flexrec-bench: error: cell 'sequence+ua_grpo(normalise=batch)': ")
    assert "unknown argument 'normalise'" in err[0]
    assert not (tmp_path / "benchmarks").exists()
    assert main(["--grid", str(_grid(tmp_path)), "--dry-run"]) == 0
    assert "5 cells × 2 seeds = 10 runs, all valid" in capsys.readouterr().out


def test_dry_run_rejects_an_unknown_model_argument(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = GRID.replace(
        "  trainer.max_epochs: 1\n", "  trainer.max_epochs: 1\n  model.group_sizee: 3\n"
    )
    assert main(["--grid", str(_grid(tmp_path, bad)), "--dry-run"]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert "cell 'sequence+grpo': unknown model argument 'group_sizee'; valid: policy," in err


POLICIES = """
from flexrec.policies.base import Policy


class KwargsPolicy(Policy):
    name = "test_kwargs_policy"

    def __init__(self, dim: int = 8, **options: object) -> None:
        super().__init__()
        self.options = options


class NeedsItemsPolicy(Policy):
    name = "test_needs_items_policy"

    def __init__(self, num_items: int, dim: int = 8) -> None:
        super().__init__()
"""


def test_policy_arguments_are_checked_as_the_registry_builds_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "grid_policies.py").write_text(POLICIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    axis = (
        "  model.policy:\n"
        "    - {name: 'grid_policies:KwargsPolicy', args: {dim: 4, vocab: 7}}\n"
        "    - {name: 'grid_policies:NeedsItemsPolicy', args: {dim: 4}}\n"
    )
    text = GRID.replace("  model.estimator: [grpo, ua_grpo]\n", axis).replace(
        "reference: sequence+grpo", ""
    )
    # a constructor with **kwargs takes extra arguments; data facts (num_items) count as given
    assert validate_grid(load_grid(_grid(tmp_path, text))) == 5
    bad = text.replace("args: {dim: 4}}", "args: {dim: 4, vocab: 7}}")
    with pytest.raises(
        ConfigError, match=r"NeedsItemsPolicy\(dim=4,vocab=7\)': policy .*unknown argument 'vocab'"
    ):
        validate_grid(load_grid(_grid(tmp_path, bad)))


def test_the_run_record_of_a_command_is_found_where_it_was_written(tmp_path: Path) -> None:
    first = tmp_path / "logs" / "version_0" / "run.json"
    write_json_atomic(first, {"metrics": {"fit": {}}})
    before = _records(tmp_path)
    second = tmp_path / "elsewhere" / "run.json"  # e.g. a logger configured by the grid's base
    write_json_atomic(second, {"metrics": {"test": {}}})
    assert _written_record(tmp_path, before, "test") == second
    before = _records(tmp_path)
    write_json_atomic(first, {"metrics": {"fit": {}, "validate": {}}})  # logger=False: rewritten
    assert _written_record(tmp_path, before, "validate") == first
    with pytest.raises(RuntimeError, match="wrote 0 run records"):
        _written_record(tmp_path, _records(tmp_path), "test")


@pytest.mark.slow
def test_killed_grid_resumes_only_unfinished_runs(tmp_path: Path) -> None:
    grid = _grid(tmp_path, GRID.replace("seeds: [0, 1]", "seeds: [0]"))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "flexrec.benchmark.cli", "--grid", str(grid), "--out", str(out)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results"
    deadline = time.time() + 300
    while len(list(results.glob("*/*.json"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the grid finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in results.glob("*/*.json")}
    assert 2 <= len(finished) < 5
    assert not list(results.rglob("*.tmp")) and not list(results.rglob(".*"))
    for path in finished:
        assert json.loads(path.read_text())["metrics"]["fit"]  # complete, parseable results

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{5 - len(finished)} runs done, {len(finished)} already finished" in rerun.stdout
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # not rerun
    assert len(list(results.glob("*/*.json"))) == 5
    report = (out / "report.md").read_text()
    assert "| swap(cutoff=5)+ua_grpo |" in report and "[oracle]" in report
    assert list(out.glob("curve_ndcgat5_*.png")) and (out / "bars_ndcgat5.png").is_file()


def _result(cell: str, seed: int, val: float, test: float, ref: float) -> dict[str, object]:
    return {
        "cell": cell,
        "seed": seed,
        "metrics": {
            "fit": {"val/ndcg@5/a": val, "val_random/ndcg@5/a": ref, "train/loss": 1.0},
            "test": {"test/ndcg@5/a": test, "test_random/ndcg@5/a": ref},
        },
        "curves": {"val/ndcg@5/a": [[0, val / 2], [1, val]]},
        "wall_s": 1.0,
    }


def test_report_means_and_standard_errors_by_hand(tmp_path: Path) -> None:
    values = {"base": [0.50, 0.60, 0.70], "new": [0.60, 0.66, 0.75]}
    for cell, vals in values.items():
        for seed, v in enumerate(vals):
            path = tmp_path / "results" / cell / f"seed{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(_result(cell, seed, v, v - 0.1, 0.3 + seed / 10)))
    rows = {
        (r.cell, r.split): r
        for r in aggregate(
            [json.loads(p.read_text()) for p in sorted((tmp_path / "results").rglob("*.json"))],
            "base",
        )
    }
    # new: mean 0.67, sample std sqrt(((-.07)^2 + (-.01)^2 + .08^2) / 2) = 0.075498..., se /sqrt(3)
    new = rows[("new", "val")]
    assert new.mean == pytest.approx(0.67)
    assert new.se == pytest.approx(math.sqrt((0.0049 + 0.0001 + 0.0064) / 2) / math.sqrt(3))
    assert new.relative == pytest.approx((0.67 - 0.6) / 0.6)
    assert rows[("base", "test")].mean == pytest.approx(0.5) and new.n == 3
    ref = rows[("[random]", "val")]  # logged by both cells, counted once per seed
    assert ref.n == 3 and ref.mean == pytest.approx(0.4)
    assert mean_se([2.0]) == (2.0, 0.0)
    other = _result("other", 0, 0.5, 0.4, 0.9)
    other["overrides"] = {"data.init_args.dataset": "ml-100k"}
    per_data = {(r.cell, r.split): r for r in aggregate([_result("base", 0, 0.5, 0.4, 0.3), other])}
    assert per_data[("[random]", "val")].mean == pytest.approx(0.3)
    assert per_data[("[random] ml-100k", "val")].mean == pytest.approx(0.9)
    report = write_report(tmp_path, "base").read_text()
    assert "| new | 0.6700 ± 0.0436 (+11.7%) |" in report
    # the same with a per-cell reference map
    mapped = write_report(tmp_path, {"new": "base"}).read_text()
    assert "| new | 0.6700 ± 0.0436 (+11.7%) |" in mapped
    assert "relative change against each cell's reference" in mapped
    csv_text = (tmp_path / "results.csv").read_text()
    assert "new,val,ndcg@5,a,0.670000,0.043589,3,0.116667" in csv_text


@pytest.mark.parametrize("grid", sorted((REPO / "benchmarks").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_grids_are_valid(grid: Path) -> None:
    loaded = load_grid(grid)
    assert validate_grid(loaded) == len(loaded.cells) >= 2
    assert len(loaded.seeds) >= 3


def test_two_cells_of_the_same_computation_are_refused(tmp_path: Path) -> None:
    again = "  again:\n    set: {model.reward: {name: sequence}, model.estimator: grpo}\n"
    grid = load_grid(_grid(tmp_path, GRID.replace("reference:", again + "reference:")))
    with pytest.raises(ConfigError, match=r"cells 'sequence\+grpo' and 'again' are the same"):
        validate_grid(grid)


def test_the_default_grid_runs_the_whole_method_under_sparse_feedback() -> None:
    grid = load_grid(REPO / "benchmarks" / "ablations.yaml")
    assert grid.reference == "flexrec"
    trained = [c for c in grid.cells if "fit" in c.commands]
    for cell in trained:
        cfg = cell.config(grid.base, 0, Path("unused"))
        assert cfg.data.init_args.sparse_p == pytest.approx(0.3)
        if OmegaConf.select(cfg, "model.estimator") == "ua_grpo":
            # uncertainty scaling only differs from grpo where a critic fills gains (σ² > 0)
            assert cfg.model.feedback.name == "critic", cell.name
    methods = {
        (str(c.overrides.get("model.reward", "swap")), str(c.overrides.get("model.estimator")))
        for c in trained
    }
    assert {("swap", "ua_grpo"), ("swap", "grpo"), ("sequence", "grpo")} <= methods
    assert {"independent", "swap_noncausal", "observed_only", "supervised", "sasrec"} <= {
        c.name for c in grid.cells
    }


def test_identical_references_of_different_data_configurations_merge() -> None:
    # generalization-style grid: the training needs differ, the scored tasks (and so the
    # references) are the same → one [random] row, each seed counted once
    results = []
    for cell, needs in (("interest", "[a]"), ("joint", "[a, b]")):
        for seed in range(2):
            r = _result(cell, seed, 0.5, 0.4, 0.3 + seed / 10)
            r["overrides"] = {"data.init_args.needs": needs}
            results.append(r)
    # a third configuration adds need b's reference only: no overlap conflict, keys are united
    extra = _result("b_only", 0, 0.5, 0.4, 0.3)
    extra["metrics"] = {"test": {"test/ndcg@5/b": 0.6, "test_random/ndcg@5/b": 0.25}}
    extra["overrides"] = {"data.init_args.needs": "[b]"}
    rows = {(r.cell, r.split, r.need): r for r in aggregate([*results, extra])}
    assert not [c for c, _, _ in rows if c.startswith("[random] ")]
    merged = rows[("[random]", "test", "a")]
    assert merged.n == 2 and merged.mean == pytest.approx(0.35)
    assert rows[("[random]", "test", "b")].mean == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("trainer", "commands", "added"),
    [
        ({}, ("fit", "test"), True),
        ({"callbacks": [{"class_path": "x.Other"}]}, ("fit",), True),
        ({}, ("validate", "test"), False),
        ({"val_check_interval": 0.5}, ("fit",), False),
        ({"check_val_every_n_epoch": None, "val_check_interval": 20}, ("fit",), False),
        ({"limit_val_batches": 0}, ("fit",), False),
        ({"callbacks": ["flexrec.lightning_cli.ValidationPoints"]}, ("fit",), False),
    ],
)
def test_fitting_cells_validate_at_least_ten_times_unless_the_grid_says_otherwise(
    trainer: dict[str, object], commands: tuple[str, ...], added: bool
) -> None:
    cfg = with_validation_points(OmegaConf.create({"trainer": trainer}), commands)
    callbacks = OmegaConf.to_container(cfg).get("trainer", {}).get("callbacks") or []
    points = [c for c in callbacks if isinstance(c, dict) and c["class_path"].endswith("Points")]
    assert bool(points) == added
    if added:
        assert points[0]["init_args"] == {"points": VALIDATION_POINTS} == {"points": 10}
        assert len(callbacks) == len(trainer.get("callbacks", [])) + 1  # others kept


def test_curves_are_read_with_the_tasks_seen(tmp_path: Path) -> None:
    log = tmp_path / "metrics.csv"
    log.write_text(
        "epoch,step,train/loss,val/ndcg@5/a,val/tasks_seen\n"
        "0,0,1.0,,\n0,1,,0.5,32.0\n1,3,,0.75,64.0\n"
    )
    assert _read_curves(log) == {"val/ndcg@5/a": [[0.0, 0.5, 32.0], [1.0, 0.75, 64.0]]}


E2E = f"""
base: {SYNTHETIC}
seeds: [0, 1]
commands: [fit, test]
set:
  trainer.max_epochs: 1
  trainer.enable_model_summary: false
  data.init_args.num_train: 96
  data.init_args.num_val: 24
  data.init_args.batch_size: 8
  model.group_size: 2
  model.policy: {{name: native, args: {{dim: 8}}}}
axes:
  model.reward: [{{name: sequence}}, {{name: swap}}]
reference: sequence
"""


def _per_task_mean(out: Path, cell: str, seed: int, need: str) -> float:
    rows = read_task_metrics(out / "results" / cell / f"seed{seed}.tasks_test.csv")
    values = [r["ndcg@5"] for r in rows if r["who"] == "policy" and r["need"] == need]
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values)


@pytest.mark.slow
def test_a_tiny_grid_reports_paired_differences_and_curve_areas(tmp_path: Path) -> None:
    grid = load_grid(_grid(tmp_path, E2E))
    out = tmp_path / "out"
    assert run_grid(grid, out) == (4, 0)
    report = write_report(out, grid.reference).read_text()
    result = json.loads((out / "results" / "swap" / "seed0.json").read_text())
    assert result["task_files"] == {"val": "seed0.tasks_val.csv", "test": "seed0.tasks_test.csv"}
    cell_config = OmegaConf.load(out / "runs" / "swap" / "seed0" / "cell.yaml")
    assert cell_config.trainer.callbacks[-1].init_args.points == 10
    # 96 tasks / 8 = 12 batches: a validation after each (12 // 10 = 1), the last one at 96
    curve = result["curves"]["val/ndcg@5/maximize_interest"]
    assert len(curve) == 12 and [p[2] for p in curve] == [8.0 * i for i in range(1, 13)]
    assert curve[-1][1] == pytest.approx(result["metrics"]["fit"]["val/ndcg@5/maximize_interest"])

    assert "## Paired differences against `sequence`" in report
    assert "### test ndcg@5: paired difference" in report and "| [oracle] |" in report
    assert "### val ndcg@5: area under the curve" in report
    assert (out / "paired_ndcgat5.png").is_file() and (out / "auc.csv").is_file()
    with (out / "paired.csv").open() as handle:
        paired = {
            (r["cell"], r["split"], r["metric"], r["need"]): r for r in csv.DictReader(handle)
        }
    with (out / "results.csv").open() as handle:
        absolute = {
            (r["cell"], r["split"], r["metric"], r["need"]): float(r["mean"])
            for r in csv.DictReader(handle)
        }
    for need in ("maximize_interest", "explore_new_topics"):
        row = paired[("swap", "test", "ndcg@5", need)]
        per_seed = [
            _per_task_mean(out, "swap", seed, need) - _per_task_mean(out, "sequence", seed, need)
            for seed in (0, 1)
        ]
        expected, se = mean_se(per_seed)
        assert float(row["mean_difference"]) == pytest.approx(expected, abs=2e-6)
        assert float(row["se"]) == pytest.approx(se, abs=2e-6)
        assert float(row["ci_low"]) <= float(row["mean_difference"]) <= float(row["ci_high"])
        assert row["seeds"] == "2" and row["tasks"] == row["users"]  # synthetic: a user per task
        # the same tasks on both sides: the difference of the cells' logged means
        gap = (
            absolute[("swap", "test", "ndcg@5", need)]
            - absolute[("sequence", "test", "ndcg@5", need)]
        )
        assert float(row["mean_difference"]) == pytest.approx(gap, abs=1e-5)
        oracle = paired[("[oracle]", "test", "ndcg@5", need)]
        assert float(oracle["mean_difference"]) > 0 and oracle["excludes_zero"] == "1"


def test_a_reference_per_axis_pairs_cells_that_differ_only_on_that_axis(tmp_path: Path) -> None:
    text = GRID.replace("reference: sequence+grpo", "reference: {model.reward: sequence}")
    grid = load_grid(_grid(tmp_path, text))
    assert grid.reference is None
    assert grid.references == {
        "swap(cutoff=5)+grpo": "sequence+grpo",
        "swap(cutoff=5)+ua_grpo": "sequence+ua_grpo",
    }
    assert grid.report_reference == grid.references


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("{model.policy: native}", r"reference must be a cell name or \{AXIS: LABEL\}"),
        ("{model.reward: swap}", "reference label 'swap' is not a label of axis 'model.reward'"),
        ("nope", "reference cell 'nope' is not in the grid"),
    ],
)
def test_bad_references_are_named(tmp_path: Path, reference: str, message: str) -> None:
    text = GRID.replace("reference: sequence+grpo", f"reference: {reference}")
    with pytest.raises(ConfigError, match=message):
        load_grid(_grid(tmp_path, text))
