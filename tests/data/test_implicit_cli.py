"""Bring your own data from the command line: ``flexrec data info`` options and output, loader
options in ``flexrec fit`` configs and overrides, one-line errors (exit 2) for bad input, and
end-to-end fits on a play-count file and a bare interaction log (generated into ``tmp_path``)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from flexrec.cli import main

LIGHTNING_NOTICES = ("GPU available", "TPU available", "HPU available", "💡 Tip")
PLAYS = ("--column", "item=artist", "--column", "label=plays")


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(LIGHTNING_NOTICES)]


def _one_line_error(capsys: pytest.CaptureFixture[str], status: int) -> str:
    assert status == 2
    lines = [ln for ln in _lines(capsys.readouterr().err) if not ln.startswith("flexrec: warning")]
    assert len(lines) == 1 and lines[0].startswith("flexrec: error: "), lines
    return lines[0].removeprefix("flexrec: error: ")


# ---------------------------------------------------------------- flexrec data info
def test_data_info_prints_the_thresholds_it_chose(
    plays_file: Path, clicks_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "info", str(plays_file), *PLAYS]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "my_plays: 7,236 interactions, 240 users, 300 items, 0 categories"
    assert out[2].startswith("labels: auto: 1,155 distinct values from 1 to 443,745 look like")
    assert (
        out[3]
        == "thresholds: interest above τ = 30 plays, full at 1,488.5; relevant from 141 (labels from 1)"
    )
    assert out[4].startswith("time: my_plays has no timestamps: row order stands in for time")
    assert main(["data", "info", str(clicks_file), "--column", "item=artist,label=interacted"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2:4] == [
        "labels: auto: every label is 1: an interaction log without strengths",
        "thresholds: interest above τ = 0 interacted, full at 1; relevant from 1 (labels from 0)",
    ]
    # the options of data info are the loader's
    assert (
        main(["data", "info", str(plays_file), *PLAYS, "--quantiles", "0.9", "0.95", "0.99"]) == 0
    )
    assert "interest above τ = 599.5 plays, full at 7,097.75;" in capsys.readouterr().out
    scale = "minimum=1,maximum=5000,threshold=100,relevant=1000"
    assert main(["data", "info", str(plays_file), *PLAYS, "--label-scale", scale]) == 0
    out = capsys.readouterr().out
    assert "labels: explicit: the given label_scale" in out
    assert "interest above τ = 100 plays, full at 5,000; relevant from 1,000" in out


def test_data_info_reads_the_loader_of_a_fit_config(
    plays_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "fit.yaml"
    loader = {"columns": {"item": "artist", "label": "plays"}, "labels": "quantile"}
    init = {"dataset": str(plays_file), "loader": loader}
    config.write_text(yaml.safe_dump({"data": {"init_args": init}}))
    assert main(["data", "info", "--config", str(config)]) == 0
    assert "interest above τ = 30 plays" in capsys.readouterr().out
    assert main(["data", "info", "--config", str(config), "--labels", "range"]) == 0
    assert "interest above τ = 221,873 plays" in capsys.readouterr().out  # the flag wins


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--sep", ","),
            "my_plays.tsv: column found: 'user\\tartist\\tplays' (1 column read with comma; the "
            "header is tab-separated: set sep: tab); need columns for user, item, label",
        ),
        (
            (),
            "my_plays.tsv: no column for 'item' (columns found: user, artist, plays); map one "
            "with columns: {item: <column>}",
        ),
        (("--labels", "counts", *PLAYS), "loader.labels must be one of ['auto', 'range'"),
        (("--column", "item"), "--column: expected KEY=VALUE, got 'item'"),
        (("--column", "itm=artist"), "unknown column role 'itm'; valid: user, item, label"),
        (
            ("--label-scale", "minimum=1,maximum=x", *PLAYS),
            "--label-scale: maximum is not a number",
        ),
        (
            ("--label-scale", "minimum=1,maximum=5,threshold=6,relevant=5", *PLAYS),
            "loader.label_scale must have minimum <= threshold < relevant <= maximum",
        ),
        (("--trend-window", "0", *PLAYS), "loader.trend_window must be > 0"),
        (
            (
                "--trend-window",
                "week",
            ),
            "flexrec data info: argument --trend-window: invalid int",
        ),
        (("--bogus",), "flexrec data info: unrecognized arguments: --bogus (see flexrec data"),
    ],
)
def test_data_info_bad_input_is_one_line_exit_2(
    plays_file: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    line = _one_line_error(capsys, main(["data", "info", str(plays_file), *args]))
    assert message in line, line


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("user,item,label\nu1,a,1\n,b,2\n", "ids.csv line 3: column 'user' (user id) is empty"),
        ("user,item,label\nu1,a,x\n", "ids.csv line 2: column 'label' is not a number ('x')"),
        (
            "user,item,label\nu1,a,0\n",
            "labels: every label is <= 0, so no row is an interaction (labels: interacted reads a "
            "positive label as one)",
        ),
    ],
)
def test_bad_files_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "ids.csv"
    path.write_text(text)
    assert _one_line_error(capsys, main(["data", "info", str(path)])) == message


def test_file_options_for_a_named_dataset_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    line = _one_line_error(capsys, main(["data", "info", "ml-latest-small", "--sep", "tab"]))
    assert line.startswith("loader.sep applies to an interactions file, not to 'ml-latest-small'")


# ---------------------------------------------------------------- flexrec fit
def _config(tmp_path: Path, dataset: Path, loader: dict, needs: list[str]) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "log_every_n_steps": 1,
            "default_root_dir": str(tmp_path / "run"),
        },
        "model": {
            "policy": {"name": "native", "args": {"dim": 32}},
            "group_size": 4,
            "references": ["oracle", "random"],
        },
        "data": {
            "class_path": "flexrec.data.datamodule.FlexRecDataModule",
            "init_args": {
                "dataset": str(dataset),
                "loader": loader,
                "needs": needs,
                "num_candidates": 10,
                "history_len": 5,
                "batch_size": 16,
                "max_train_tasks": 48,
                "max_eval_tasks": 32,
                "with_text": False,
            },
        },
    }
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _metrics(tmp_path: Path) -> pd.DataFrame:
    [csv] = (tmp_path / "run").rglob("metrics.csv")
    return pd.read_csv(csv)


@pytest.mark.parametrize(
    ("file", "label"),
    [("plays_file", "plays"), ("clicks_file", "interacted")],
)
def test_implicit_files_train_end_to_end(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    file: str,
    label: str,
) -> None:
    path = request.getfixturevalue(file)
    loader = {"columns": {"item": "artist", "label": label}}
    config = _config(tmp_path, path, loader, ["maximize_interest", "trend_promotion"])
    assert main(["fit", f"--config={config}"]) == 0
    warnings = [ln for ln in _lines(capsys.readouterr().err) if ln.startswith("flexrec: warning")]
    assert warnings == [
        f"flexrec: warning: {path.stem} has no timestamps: row order stands in for time (history "
        "order, cut points, statistics before a cut, trend window of 361 rows)"
    ]
    metrics = _metrics(tmp_path)
    losses = metrics["train/loss"].dropna()
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    last = metrics.ffill().iloc[-1]
    for need in ("maximize_interest", "trend_promotion"):
        oracle, random = last[f"val_oracle/ndcg@5/{need}"], last[f"val_random/ndcg@5/{need}"]
        assert oracle == 1.0 and random < 0.8, (need, oracle, random)
        assert last[f"val/no_gain_rate/{need}"] < 0.25


def test_loader_options_from_the_command_line(
    plays_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, plays_file, {"columns": {"item": "artist"}}, ["maximize_interest"])
    base = ["fit", f"--config={config}"]
    # a misspelt key, a bad rule: one line, exit 2, before any data is read
    line = _one_line_error(capsys, main([*base, "--data.init_args.loader.sepp=tab"]))
    assert line == "data (FlexRecDataModule): unrecognized arguments: --loader.sepp=tab"
    line = _one_line_error(capsys, main([*base, "--data.init_args.loader.labels=counts"]))
    assert "Expected a typing.Literal['auto', 'range', 'quantile', 'interacted']" in line
    # a wrong separator from the command line
    line = _one_line_error(capsys, main([*base, "--data.init_args.loader.sep=comma"]))
    assert "1 column read with comma; the header is tab-separated: set sep: tab" in line
    # the old midpoint scale on counts: refused at set-up, nothing written
    args = [*base, "--data.init_args.loader.columns.label=plays"]
    line = _one_line_error(capsys, main([*args, "--data.init_args.loader.labels=range"]))
    assert line.startswith("maximize_interest: all 768 train tasks give every candidate the same")
    assert not list(tmp_path.rglob("*.ckpt"))
