"""Loaders on the real files in ../shared/data and on tiny hand-written files of each layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flexrec.data.dataset import InteractionData
from flexrec.data.generic import load_interactions
from flexrec.data.kuairec import load_caption_table, load_item_categories, load_kuairec
from flexrec.data.loaders import EMBEDDED_DIR, load_dataset
from flexrec.data.movielens import load_movielens_1m, load_movielens_100k, load_movielens_latest
from flexrec.errors import ConfigError, DataError


def _write(folder: Path, files: dict[str, str], encoding: str = "utf-8") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding=encoding)
    return folder


def _check_sorted(data: InteractionData) -> None:
    same_user = np.diff(data.user) == 0
    assert (np.diff(data.user) >= 0).all()
    assert (np.diff(data.timestamp)[same_user] >= 0).all()
    pairs = data.user * data.num_items + data.item
    assert len(np.unique(pairs)) == len(pairs)


# ---------------------------------------------------------------- real files
def test_ml100k_real_counts(ml100k: InteractionData) -> None:
    assert (ml100k.num_interactions, ml100k.num_users, ml100k.num_items) == (100_000, 943, 1_682)
    assert len(ml100k.categories) == 19 and ml100k.categories[1] == "Action"
    assert ml100k.titles[0] == "Toy Story" and ml100k.years[0] == 1995
    toy = ml100k.item_categories[0]
    assert [ml100k.categories[i] for i in np.flatnonzero(toy)] == [
        "Animation",
        "Children's",
        "Comedy",
    ]
    assert ml100k.label.min() == 1 and ml100k.label.max() == 5
    assert ml100k.user_features is not None and ml100k.user_features.shape[0] == 943
    assert ml100k.user_features.loc[0, "occupation"] == "technician"
    _check_sorted(ml100k)


def test_ml_latest_small_real_counts(ml_latest_small_dir: Path) -> None:
    data = load_movielens_latest(ml_latest_small_dir)
    assert (data.num_interactions, data.num_users, data.num_items) == (100_836, 610, 9_742)
    assert data.label.min() == 0.5 and data.label.max() == 5.0
    assert data.titles[0] == "Toy Story" and "pixar" in data.item_text[0]
    _check_sorted(data)


def test_embedded_copy_equals_shared_copy(ml_latest_small_dir: Path) -> None:
    assert (EMBEDDED_DIR / "ml-latest-small" / "README.txt").read_bytes() == (
        ml_latest_small_dir / "README.txt"
    ).read_bytes()
    embedded = load_dataset("ml-latest-small")
    shared = load_movielens_latest(ml_latest_small_dir)
    assert embedded.num_interactions == 100_836 and embedded.num_users == 610
    for field in ("user", "item", "label", "timestamp", "item_ids", "item_categories", "years"):
        np.testing.assert_array_equal(getattr(embedded, field), getattr(shared, field))
    assert list(embedded.titles) == list(shared.titles)


def test_kuairec_side_tables(kuairec_side_dir: Path) -> None:
    cats = load_item_categories(kuairec_side_dir / "item_categories.csv")
    assert len(cats) == 10_728
    assert cats["categories"].iloc[1] == [27, 9]
    assert max(max(c) for c in cats["categories"]) == 30
    captions = load_caption_table(kuairec_side_dir / "kuairec_caption_category.csv")
    assert captions["item"].nunique() == 10_728


def test_load_dataset_by_root(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEXREC_DATA_DIR", str(shared_data))
    assert load_dataset("ml-100k").num_interactions == 100_000
    assert load_dataset(shared_data / "ml-100k").name == "ml-100k"


def test_named_dataset_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEXREC_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="FLEXREC_DATA_DIR"):
        load_dataset("ml-100k")
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        load_dataset("nope")


# ---------------------------------------------------------------- hand-written files
U_ITEM = (
    "1|Alpha (1995)|01-Jan-1995||http://x|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "2|Béta|01-Jan-1997||http://x|0|0|0|0|0|1|0|0|1|0|0|0|0|0|0|0|0|0|0\n"
)


def test_ml100k_hand_written(tmp_path: Path) -> None:
    folder = _write(tmp_path / "ml", {"u.data": "7\t2\t5\t20\n7\t1\t3\t10\n9\t1\t4\t5\n"})
    (folder / "u.item").write_bytes(U_ITEM.encode("latin-1"))
    data = load_movielens_100k(folder)
    assert list(data.user_ids) == [7, 9] and list(data.item_ids) == [1, 2]
    np.testing.assert_array_equal(data.item, [0, 1, 0])
    np.testing.assert_array_equal(data.label, [3.0, 5.0, 4.0])
    assert list(data.titles) == ["Alpha", "Béta"] and list(data.years) == [1995, 1997]
    assert [data.categories[c] for c in np.flatnonzero(data.item_categories[1])] == [
        "Comedy",
        "Drama",
    ]


def test_ml1m_hand_written(tmp_path: Path) -> None:
    folder = _write(
        tmp_path / "ml1m",
        {
            "ratings.dat": "1::10::5::978300760\n1::20::3::978300000\n2::10::1::978300001\n",
            "movies.dat": "10::Heat (1995)::Action|Crime\n20::Up (2009)::(no genres listed)\n",
            "users.dat": "1::F::1::10::48067\n2::M::56::16::70072\n",
        },
        encoding="latin-1",
    )
    data = load_movielens_1m(folder)
    assert data.num_interactions == 3 and data.categories == ("Action", "Crime")
    np.testing.assert_array_equal(data.item, [1, 0, 0])
    assert not data.item_categories[1].any()
    assert data.user_features is not None and list(data.user_features["age"]) == [1, 56]


def test_ml_latest_hand_written_with_repeat(tmp_path: Path) -> None:
    folder = _write(
        tmp_path / "latest",
        {
            "ratings.csv": "userId,movieId,rating,timestamp\n1,5,4.5,100\n1,6,2.0,90\n1,5,1.0,200\n",
            "movies.csv": 'movieId,title,genres\n5,"Five, The (2001)",Drama\n6,Six,Comedy|Drama\n',
            "tags.csv": "userId,movieId,tag,timestamp\n1,5,Dark,1\n2,5,dark,2\n1,5,slow,3\n",
        },
    )
    data = load_movielens_latest(folder)
    np.testing.assert_array_equal(data.item, [1, 0])
    np.testing.assert_array_equal(data.label, [2.0, 1.0])  # the repeated pair keeps its last row
    assert data.titles[0] == "Five, The" and data.years[0] == 2001
    assert data.item_text[0] == "dark, slow"


KUAI_HEADER = "user_id,video_id,play_duration,video_duration,time,date,timestamp,watch_ratio\n"


def test_kuairec_hand_written(tmp_path: Path) -> None:
    rows = (
        "0,1,5000,10000,2020-07-05 00:00:10.0,20200705,1593907210.0,0.5\n"
        "0,2,30000,10000,2020-07-05 00:01:10.0,20200705,1593907270.0,3.0\n"
        "1,1,10000,10000,,20200706,,1.0\n"
        "1,2,10000,10000,,,,1.0\n"
    )
    folder = _write(
        tmp_path / "kuai",
        {
            "small_matrix.csv": KUAI_HEADER + rows,
            "item_categories.csv": 'video_id,feat\n1,[3]\n2,"[0, 3]"\n',
            "item_daily_features.csv": "video_id,date,play_cnt,show_cnt\n1,20200705,12,30\n",
        },
    )
    data = load_kuairec(folder)
    assert data.num_interactions == 3 and data.provenance["dropped_rows"] == 1
    assert data.categories == ("tag 0", "tag 1", "tag 2", "tag 3")
    assert data.timestamp[-1] == 1593993600  # from the date column
    assert data.item_daily is not None and data.item_daily["count"].tolist() == [12.0]
    assert data.trend_window == 86_400


def test_generic_csv_and_parquet(tmp_path: Path) -> None:
    csv = tmp_path / "clicks.csv"
    csv.write_text(
        "uid,sku,stars,when,tags,name\n"
        "a,x,1,2024-01-02,red;blue,X\n"
        "a,y,5,2024-01-01,blue,Y\n"
        "b,x,3,2024-01-03,red;blue,X\n"
    )
    columns = {"user": "uid", "item": "sku", "label": "stars", "timestamp": "when"}
    columns |= {"categories": "tags", "title": "name"}
    data = load_interactions(csv, columns=columns, category_sep=";")
    assert data.categories == ("blue", "red") and list(data.titles) == ["X", "Y"]
    np.testing.assert_array_equal(data.item, [1, 0, 0])
    assert data.scale.threshold == 3.0 and data.scale.relevant == 4.0
    frame = __import__("pandas").read_csv(csv)
    frame.to_parquet(tmp_path / "clicks.parquet")
    again = load_interactions(tmp_path / "clicks.parquet", columns=columns, category_sep=";")
    np.testing.assert_array_equal(again.timestamp, data.timestamp)


# ---------------------------------------------------------------- malformed files
@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"u.data": ""}, r"^u\.data: file is empty$"),
        (
            {"u.data": "1,2,3,4\n"},
            r"^u\.data: expected 4 tab-separated columns, found 1 \(wrong separator\?\)$",
        ),
        (
            {"u.data": "1\t2\t3\t4\n1\t3\tabc\t5\n"},
            r"^u\.data line 2: column 'rating' is not a number \('abc'\)$",
        ),
        (
            {"u.data": "1\t2\t3\t4\n1\t3\t4\t5\t6\n"},
            r"^u\.data: Expected 4 fields in line 2, saw 5$",
        ),
    ],
)
def test_ml100k_malformed(tmp_path: Path, files: dict[str, str], message: str) -> None:
    folder = _write(tmp_path / "bad", files)
    (folder / "u.item").write_bytes(U_ITEM.encode("latin-1"))
    with pytest.raises(DataError, match=message):
        load_movielens_100k(folder)


@pytest.mark.parametrize(
    ("ratings", "message"),
    [
        ("userId,rating,timestamp\n1,4,5\n", r"^ratings\.csv: missing column 'movieId'$"),
        (
            "userId;movieId;rating;timestamp\n1;2;4;5\n",
            r"missing column 'userId' \(wrong separator\?\)",
        ),
        (
            "userId,movieId,rating,timestamp\n1,2,4,5\n" + "1,3,4,5\n" * 14 + "1,9,abc,5\n",
            r"^ratings\.csv line 17: column 'rating' is not a number \('abc'\)$",
        ),
        (
            "userId,movieId,rating,timestamp\n1,2,,5\n",
            r"^ratings\.csv line 2: column 'rating' is empty$",
        ),
        ("userId,movieId,rating,timestamp\n", r"^ratings\.csv: no data rows$"),
    ],
)
def test_ml_latest_malformed(tmp_path: Path, ratings: str, message: str) -> None:
    folder = _write(
        tmp_path / "bad",
        {"ratings.csv": ratings, "movies.csv": "movieId,title,genres\n2,A,Drama\n"},
    )
    with pytest.raises(DataError, match=message):
        load_movielens_latest(folder)


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data directory not found"):
        load_movielens_100k(tmp_path / "nowhere")
    _write(tmp_path / "k", {"small_matrix.csv": KUAI_HEADER + "0,1,1,1,,20200705,1.0,1.0\n"})
    with pytest.raises(DataError, match="missing file 'item_categories.csv'"):
        load_kuairec(tmp_path / "k")


def test_generic_errors_and_path_dispatch(tmp_path: Path) -> None:
    csv = tmp_path / "events.csv"
    csv.write_text("user,item,label\nu1,i1,1\nu1,i2,0\n")
    data = load_dataset(csv)
    assert data.name == "events" and data.num_interactions == 2
    np.testing.assert_array_equal(data.timestamp, [0, 1])  # row order when no time column
    with pytest.raises(ConfigError, match="unknown column role 'rating'"):
        load_interactions(csv, columns={"rating": "label"})
    found = r" \(columns found: user, item, label\)$"
    with pytest.raises(
        DataError, match=r"^events\.csv: missing column 'stars' for 'label'" + found
    ):
        load_interactions(csv, columns={"label": "stars"})
    bad_time = tmp_path / "t.csv"
    bad_time.write_text("user,item,label,timestamp\na,b,1,2024-01-01\na,c,1,soon\n")
    with pytest.raises(DataError, match=r"^t\.csv line 3: column 'timestamp' is not a time"):
        load_interactions(bad_time)
    with pytest.raises(DataError, match="no known dataset layout"):
        load_dataset(tmp_path)
