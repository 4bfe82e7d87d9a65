"""Loaders for the official MovieLens layouts: 100K (``u.data``), 1M (``*.dat``) and latest (CSV).

Each returns an :class:`~flexrec.data.dataset.InteractionData` with genres as categories, the title
(year split off) and, for ml-latest, the movie's most frequent tags as item text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from flexrec.data._io import find_file, read_table, require_numeric
from flexrec.data.dataset import MOVIELENS_SCALE, InteractionData, LabelScale, split_year
from flexrec.errors import DataError

__all__ = ["load_movielens_1m", "load_movielens_100k", "load_movielens_latest"]

ML100K_GENRES = [
    *("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime"),
    *("Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery"),
    *("Romance", "Sci-Fi", "Thriller", "War", "Western"),
]
_NO_GENRE = "(no genres listed)"


_HEADERLESS = ["user", "item", "rating", "timestamp"]


def _ratings(frame: pd.DataFrame, file: str, header: bool, names: list[str]) -> pd.DataFrame:
    """``names``: the file's user, item, rating and timestamp columns (named in errors)."""
    kinds = dict(zip(names, ("int", "int", "float", "int"), strict=True))
    frame = require_numeric(frame, kinds, file, header)
    return frame[names].set_axis(["user", "item", "label", "timestamp"], axis=1)


def _items_from_genre_strings(movies: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``movies`` has ``item, title, genres`` with ``A|B|C`` genre strings."""
    split = [
        [] if g in ("", _NO_GENRE) else g.split("|")
        for g in movies["genres"].fillna("").astype(str)
    ]
    names = sorted({g for gs in split for g in gs})
    index = {g: i for i, g in enumerate(names)}
    titles, years = zip(*(split_year(t) for t in movies["title"].astype(str)), strict=True)
    items = pd.DataFrame(
        {
            "item": movies["item"].to_numpy(),
            "title": titles,
            "year": years,
            "categories": [[index[g] for g in gs] for gs in split],
            "text": "",
        }
    )
    return items, names


def load_movielens_100k(path: str | Path) -> InteractionData:
    """MovieLens 100K from a folder with ``u.data``, ``u.item`` (and optionally ``u.genre``, ``u.user``).

    Args:
        path: the ``ml-100k`` folder.

    Returns:
        100,000 ratings (1–5) of 943 users on 1,682 movies for the official files.

    Raises:
        DataError: a missing or malformed file.
    """
    root = Path(path)
    data = read_table(find_file(root, "u.data"), "\t", _HEADERLESS)
    ratings = _ratings(data, "u.data", header=False, names=_HEADERLESS)
    genre_file = find_file(root, "u.genre", required=False)
    genres = list(ML100K_GENRES)
    if genre_file is not None:
        table = read_table(genre_file, "|", ["name", "index"], encoding="latin-1")
        genres = table.dropna().sort_values("index", key=lambda s: s.astype(int))["name"].tolist()
    columns = ["item", "title", "release", "video", "url", *[f"g{i}" for i in range(len(genres))]]
    raw = read_table(find_file(root, "u.item"), "|", columns, encoding="latin-1")
    raw = require_numeric(raw, {"item": "int"}, "u.item", header=False)
    flags = raw[columns[5:]].to_numpy() == "1"
    titles, years = zip(*(split_year(t) for t in raw["title"].fillna("")), strict=True)
    release = pd.to_datetime(raw["release"], format="%d-%b-%Y", errors="coerce").dt.year
    years_arr = np.where(np.array(years) > 0, years, release.fillna(-1).astype(np.int64))
    items = pd.DataFrame(
        {
            "item": raw["item"].to_numpy(),
            "title": titles,
            "year": years_arr,
            "categories": [list(np.flatnonzero(row)) for row in flags],
            "text": "",
        }
    )
    users = None
    user_file = find_file(root, "u.user", required=False)
    if user_file is not None:
        names = ["user", "age", "gender", "occupation", "zip"]
        users = require_numeric(
            read_table(user_file, "|", names, encoding="latin-1"),
            {"user": "int", "age": "int"},
            "u.user",
            header=False,
        ).set_index("user")
    return InteractionData.build(
        "ml-100k",
        ratings,
        items,
        genres,
        LabelScale(1.0, 5.0, 3.0, 4.0, "rating"),
        user_features=users,
        provenance={"source": str(root), "layout": "movielens-100k"},
    )


def load_movielens_1m(path: str | Path) -> InteractionData:
    """MovieLens 1M from ``ratings.dat``, ``movies.dat`` (and optionally ``users.dat``), ``::``-separated.

    Raises:
        DataError: a missing or malformed file.
    """
    root = Path(path)
    data = read_table(find_file(root, "ratings.dat"), "::", _HEADERLESS, "latin-1")
    ratings = _ratings(data, "ratings.dat", header=False, names=_HEADERLESS)
    movies = read_table(find_file(root, "movies.dat"), "::", ["item", "title", "genres"], "latin-1")
    movies = require_numeric(movies, {"item": "int"}, "movies.dat", header=False)
    items, genres = _items_from_genre_strings(movies)
    users = None
    user_file = find_file(root, "users.dat", required=False)
    if user_file is not None:
        names = ["user", "gender", "age", "occupation", "zip"]
        users = require_numeric(
            read_table(user_file, "::", names, encoding="latin-1"),
            {"user": "int", "age": "int", "occupation": "int"},
            "users.dat",
            header=False,
        ).set_index("user")
    return InteractionData.build(
        "ml-1m",
        ratings,
        items,
        genres,
        LabelScale(1.0, 5.0, 3.0, 4.0, "rating"),
        user_features=users,
        provenance={"source": str(root), "layout": "movielens-1m"},
    )


def load_movielens_latest(path: str | Path, name: str = "ml-latest-small") -> InteractionData:
    """MovieLens latest / latest-small from ``ratings.csv``, ``movies.csv`` (and ``tags.csv``).

    Files may be gzip-compressed (``ratings.csv.gz``). The three most frequent tags of a movie
    become its item text.

    Raises:
        DataError: a missing or malformed file.
    """
    root = Path(path)
    file = find_file(root, "ratings.csv", "ratings.csv.gz")
    assert file is not None
    names = ["userId", "movieId", "rating", "timestamp"]
    data = read_table(file, ",", required=names)
    ratings = _ratings(data, file.name, header=True, names=names)
    movie_file = find_file(root, "movies.csv", "movies.csv.gz")
    assert movie_file is not None
    movies = read_table(movie_file, ",", required=["movieId", "title", "genres"])
    movies = require_numeric(
        movies.rename(columns={"movieId": "item"}), {"item": "int"}, movie_file.name
    )
    items, genres = _items_from_genre_strings(movies)
    tag_file = find_file(root, "tags.csv", "tags.csv.gz", required=False)
    if tag_file is not None:
        tags = read_table(tag_file, ",", required=["movieId", "tag"])
        tags = require_numeric(tags, {"movieId": "int"}, tag_file.name)
        tags["tag"] = tags["tag"].astype(str).str.strip().str.lower()
        top = (
            tags.groupby(["movieId", "tag"])
            .size()
            .rename("n")
            .reset_index()
            .sort_values(["movieId", "n", "tag"], ascending=[True, False, True])
            .groupby("movieId")["tag"]
            .apply(lambda s: ", ".join(s.head(3)))
        )
        items["text"] = items["item"].map(top).fillna("")
    if ratings["label"].min() < MOVIELENS_SCALE.minimum - 1e-9:
        raise DataError(f"{file.name}: ratings below 0.5 ({ratings['label'].min()})")
    return InteractionData.build(
        name,
        ratings,
        items,
        genres,
        MOVIELENS_SCALE,
        provenance={"source": str(root), "layout": "movielens-latest"},
    )
