"""Bring your own data: loader options, separators, string ids, label rules, no timestamps.

Files are written into ``tmp_path``: small hand-written ones, and the generated play-count table
and bare interaction log of ``conftest.py`` (``plays_file``, ``clicks_file``).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from flexrec.data._io import infer_separator
from flexrec.data.checks import info_lines, row_order_note
from flexrec.data.generic import load_interactions
from flexrec.data.labels import choose_scale, label_kind
from flexrec.data.loaders import load_dataset
from flexrec.data.options import LoaderOptions, loader_options
from flexrec.errors import ConfigError, DataError

PLAYS = {"item": "artist", "label": "plays"}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---------------------------------------------------------------- separators
@pytest.mark.parametrize(
    ("name", "text", "sep", "how"),
    [
        ("a.tsv", "user,item\tlabel\n", "\t", "the .tsv suffix"),  # the suffix wins
        ("a.tab", "user item label\n", "\t", "the .tab suffix"),
        ("a.csv", "user\titem\tlabel\nu1\tA, B\t3\n", "\t", "header line is tab-separated"),
        ("a.dat", "user::item::label\n1::2::3\n", "::", "'::' in the header line"),
        ("a.dat", "user item label\n1 2 3\n", r"\s+", "whitespace-separated"),
        ("a.txt", "user;item;label\n1;2;3\n", ";", "semicolon-separated"),
        # commas inside a quoted title do not outvote the steady tab
        ("a.csv", 'user\titem,title\tlabel\n1\t"x, y"\t3\n', "\t", "tab-separated"),
        ("a.csv", "user,item,label\n1,2,3\n", ",", "comma-separated"),
    ],
)
def test_the_separator_is_inferred(
    tmp_path: Path, name: str, text: str, sep: str, how: str
) -> None:
    found, why = infer_separator(_write(tmp_path / name, text))
    assert found == sep and how in why


def test_inferred_separators_read_the_files(tmp_path: Path) -> None:
    rows = "user\titem\tlabel\nu1\ti1\t5\nu1\ti2\t1\nu2\ti1\t3\n"
    with gzip.open(tmp_path / "r.tsv.gz", "wt") as handle:
        handle.write(rows)
    _write(tmp_path / "r.csv", rows)  # tab-separated although named .csv
    _write(tmp_path / "r.dat", rows.replace("\t", "::"))
    for name in ("r.tsv.gz", "r.csv", "r.dat"):
        data = load_interactions(tmp_path / name)
        assert (data.num_interactions, data.num_users, data.num_items) == (3, 2, 2), name
    assert (
        "tab-separated (the .tsv suffix)"
        in load_dataset(tmp_path / "r.tsv.gz").provenance["format"]
    )
    # a name works where a tab is hard to type
    assert load_interactions(tmp_path / "r.csv", sep="tab").num_interactions == 3


def test_a_wrong_separator_lists_the_column_it_found(plays_file: Path) -> None:
    with pytest.raises(DataError) as info:
        load_interactions(plays_file, columns=PLAYS, sep=",")
    assert str(info.value) == (
        "my_plays.tsv: column found: 'user\\tartist\\tplays' (1 column read with comma; the "
        "header is tab-separated: set sep: tab); need columns for user, item, label"
    )


def test_a_missing_role_lists_the_columns_found(plays_file: Path) -> None:
    with pytest.raises(DataError) as info:
        load_interactions(plays_file)
    assert str(info.value) == (
        "my_plays.tsv: no column for 'item' (columns found: user, artist, plays); "
        "map one with columns: {item: <column>}"
    )
    with pytest.raises(DataError, match="missing column 'artst' for 'item' \\(columns found: user"):
        load_interactions(plays_file, columns={"item": "artst", "label": "plays"})


# ---------------------------------------------------------------- ids
def test_string_ids_keep_their_spelling(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "ids.csv",
        "user,item,label\n007,b,1\n7,a,2\nann,a,3\n007,a,4\n",
    )
    data = load_interactions(path)
    assert list(data.user_ids) == ["007", "7", "ann"]  # text: "007" and "7" are two users
    assert list(data.item_ids) == ["b", "a"]
    assert data.user_ids[data.user[data.label == 4][0]] == "007"
    numeric = load_interactions(_write(tmp_path / "n.csv", "user,item,label\n10,3,1\n9,3,2\n"))
    assert numeric.user_ids.dtype == np.int64 and list(numeric.user_ids) == [9, 10]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("user,item,label\nu1,a,1\n,b,2\n", "ids.csv line 3: column 'user' (user id) is empty"),
        ("user,item,label\nu1,a,1\nu2, ,2\n", "ids.csv line 3: column 'item' (item id) is empty"),
    ],
)
def test_an_empty_id_is_refused_with_its_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError) as info:
        load_interactions(_write(tmp_path / "ids.csv", text))
    assert str(info.value) == message


# ---------------------------------------------------------------- label rules
def test_auto_labels_by_kind() -> None:
    assert label_kind(np.array([1.0, 2, 3, 4, 5]))[0] == "range"
    assert label_kind(np.array([0.0, 1.0]))[0] == "range"
    assert label_kind(np.array([1.0, 1.0, 1.0]))[0] == "interacted"
    kind, why = label_kind(np.array([1.0, 4, 20, 350_000]))
    assert kind == "quantile" and why == "4 distinct values from 1 to 350,000 look like counts"
    assert label_kind(np.array([0.1, 0.7, 2.5]))[1].endswith("look like continuous values")


def test_quantile_thresholds_of_counts(plays_file: Path) -> None:
    data = load_interactions(plays_file, columns=PLAYS)
    q50, q75, q95 = np.quantile(data.label, [0.5, 0.75, 0.95])
    s = data.scale
    assert (s.rule, s.name) == ("quantile", "plays")
    assert (s.threshold, s.relevant, s.maximum, s.minimum) == (q50, q75, q95, 1.0)
    assert data.label.max() == 443_745  # raw counts are kept
    # about half the interactions carry interest, whatever the units
    assert 0.45 < np.mean(data.label > s.threshold) < 0.55
    custom = load_interactions(plays_file, columns=PLAYS, quantiles=(0.25, 0.5, 0.99))
    assert custom.scale.threshold == np.quantile(data.label, 0.25)


def test_quantile_thresholds_survive_ties() -> None:
    # most counts are 1: the median, the 75th and 95th percentiles are all 1
    labels = np.array([1.0] * 96 + [2, 3, 9, 40])
    scale, _ = choose_scale(labels, "quantile")
    assert scale.threshold == 1 and scale.relevant == 2 and scale.maximum == 2
    scale, _ = choose_scale(np.array([1.0, 5, 5, 5, 5, 5]), "quantile")
    assert scale.threshold == 1 and scale.relevant == scale.maximum == 5


def test_interacted_labels_become_one_and_zero(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.csv", "user,item,label\nu,a,3\nu,b,0\nv,a,1\n")
    data = load_interactions(path, labels="interacted")
    assert sorted(data.label) == [0.0, 1.0, 1.0]
    assert (data.scale.threshold, data.scale.maximum, data.scale.rule) == (0, 1, "interacted")
    with pytest.raises(DataError, match="every label is <= 0, so no row is an interaction"):
        load_interactions(_write(tmp_path / "z.csv", "user,item,label\nu,a,0\n"), labels="auto")


def test_constant_labels_need_the_interacted_rule(clicks_file: Path) -> None:
    columns = {"item": "artist", "label": "interacted"}
    assert load_interactions(clicks_file, columns=columns).scale.rule == "interacted"
    with pytest.raises(DataError) as info:
        load_interactions(clicks_file, columns=columns, labels="range")
    assert str(info.value) == (
        "labels: every interacted is 1, so no candidate is better than another; use labels: "
        "interacted (an interaction log) or give label_scale"
    )


def test_explicit_label_scale_from_options(plays_file: Path) -> None:
    scale = {"minimum": 1, "maximum": 1000, "threshold": 10, "relevant": 100}
    data = load_dataset(plays_file, options={"columns": PLAYS, "label_scale": scale})
    assert (data.scale.threshold, data.scale.rule, data.scale.name) == (10, "explicit", "plays")
    assert data.provenance["labels"] == "explicit: the given label_scale"


def test_label_options_apply_to_named_datasets_too() -> None:
    data = load_dataset("ml-latest-small", options={"labels": "quantile"})
    assert (data.scale.rule, data.scale.threshold, data.scale.maximum) == ("quantile", 3.5, 5.0)
    assert load_dataset("ml-latest-small").scale.rule == "fixed"  # auto keeps its scale
    with pytest.raises(ConfigError, match="loader.sep applies to an interactions file"):
        load_dataset("ml-latest-small", options={"sep": "tab"})


# ---------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"seperator": ";"}, "unknown loader option 'seperator'; valid: sep, columns"),
        ({"labels": "counts"}, "loader.labels must be one of ['auto', 'range', 'quantile'"),
        ({"quantiles": [0.5, 0.4, 0.9]}, "loader.quantiles must increase"),
        ({"quantiles": [0.5, 0.9]}, "loader.quantiles must be 3 numbers"),
        ({"quantiles": [0.0, 0.5, 0.9]}, "loader.quantiles must be > 0 and <= 1, got 0.0"),
        ({"columns": {"itm": "artist"}}, "unknown column role 'itm'; valid: user, item"),
        ({"sep": ""}, "loader.sep is empty"),
        ({"trend_window": 0}, "loader.trend_window must be > 0"),
        ({"label_scale": {"minimum": 0, "maximum": 5}}, "loader.label_scale needs threshold"),
        (
            {"label_scale": {"minimum": 0, "maximum": 5, "threshold": 5, "relevant": 5}},
            "loader.label_scale must have minimum <= threshold < relevant <= maximum",
        ),
        ({"label_scale": {"max": 5}}, "unknown loader.label_scale key 'max'"),
    ],
)
def test_bad_loader_options_are_one_line_config_errors(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        loader_options(options)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_separator_names() -> None:
    assert LoaderOptions(sep="tab").separator == "\t"
    assert LoaderOptions(sep="\\t").separator == "\t"
    assert LoaderOptions(sep="::").separator == "::"
    assert LoaderOptions(sep="whitespace").separator == r"\s+"
    assert LoaderOptions().separator is None
    assert loader_options({"quantiles": [0.2, 0.5, 0.9]}).as_dict()["quantiles"] == [0.2, 0.5, 0.9]


# ---------------------------------------------------------------- time
def test_without_timestamps_row_order_is_time(plays_file: Path) -> None:
    data = load_interactions(plays_file, columns=PLAYS)
    assert data.time_unit == "rows"
    assert data.trend_window == 7_236 // 20
    # the row number is the time: each user's rows keep their file order
    frame = __import__("pandas").read_csv(plays_file, sep="\t")
    first = frame[frame.user == "user_0000"]
    u = int(np.flatnonzero(data.user_ids == "user_0000")[0])
    rows = slice(data.user_offsets[u], data.user_offsets[u + 1])
    np.testing.assert_array_equal(data.timestamp[rows], first.index.to_numpy())
    np.testing.assert_array_equal(data.label[rows], first.plays.to_numpy())
    note = row_order_note(data)
    assert note == (
        "my_plays has no timestamps: row order stands in for time (history order, cut points, "
        "statistics before a cut, trend window of 361 rows)"
    )
    assert load_interactions(plays_file, columns=PLAYS, trend_window=50).trend_window == 50


def test_rows_sorted_by_label_are_pointed_out(tmp_path: Path) -> None:
    import pandas as pd

    rows = [(f"u{u}", f"i{i}", 100 - 10 * i) for u in range(5) for i in range(6)]
    path = tmp_path / "sorted.csv"
    pd.DataFrame(rows, columns=["user", "item", "label"]).to_csv(path, index=False)
    note = row_order_note(load_interactions(path))
    assert note is not None and note.endswith(
        "; 100% of the users' rows are sorted by label, so shuffle each user's rows or add a "
        "timestamp column"
    )
    assert row_order_note(load_dataset("ml-latest-small")) is None  # real timestamps


def test_info_lines_say_what_was_chosen(plays_file: Path, clicks_file: Path) -> None:
    lines = info_lines(load_interactions(plays_file, columns=PLAYS))
    assert lines[0] == "my_plays: 7,236 interactions, 240 users, 300 items, 0 categories"
    assert lines[1].endswith(
        "my_plays.tsv: tab-separated (the .tsv suffix); columns user=user, item=artist, label=plays"
    )
    assert lines[2] == (
        "labels: auto: 1,155 distinct values from 1 to 443,745 look like counts; "
        "quantiles 0.5/0.75/0.95 of the labels"
    )
    assert lines[3].startswith("thresholds: interest above τ = 30 plays, full at ")
    assert lines[4].startswith("time: my_plays has no timestamps")
    clicks = info_lines(
        load_interactions(clicks_file, columns={"item": "artist", "label": "interacted"})
    )
    assert clicks[2] == "labels: auto: every label is 1: an interaction log without strengths"
    assert clicks[4].startswith("candidates: every label is an interaction")
