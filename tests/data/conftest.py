"""Fixtures of the data tests: the embedded MovieLens copy, and the shared real files.

Tests that only need *a* dataset use the copy of ml-latest-small embedded in the package, so every
clone runs them; only tests of the real-file loaders use ``../shared/data`` (skipped cleanly when
absent, or when ``FLEXREC_SHARED_DATA`` points to a missing folder; see tests/conftest.py).
Implicit-feedback files (play counts, a bare interaction log) are generated into ``tmp_path``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flexrec.data.dataset import InteractionData


def _folder(shared: Path, name: str) -> Path:
    folder = shared / name
    if not folder.is_dir():
        pytest.skip(f"real data {folder} not available (expected ../shared/data/{name})")
    return folder


@pytest.fixture(scope="session")
def shared_data(shared_data_dir: Path) -> Path:
    """``../shared/data`` (relative to the repository root)."""
    if not shared_data_dir.is_dir():
        pytest.skip(f"shared data folder {shared_data_dir} not available")
    return shared_data_dir


@pytest.fixture(scope="session")
def ml100k_dir(shared_data_dir: Path) -> Path:
    """The real MovieLens 100K folder."""
    return _folder(shared_data_dir, "ml-100k")


@pytest.fixture(scope="session")
def ml_latest_small_dir(shared_data_dir: Path) -> Path:
    """The real MovieLens latest-small folder."""
    return _folder(shared_data_dir, "ml-latest-small")


@pytest.fixture(scope="session")
def kuairec_side_dir(shared_data_dir: Path) -> Path:
    """The real KuaiRec 2.0 side tables."""
    return _folder(shared_data_dir, "kuairec-side")


@pytest.fixture(scope="session")
def ml100k(ml100k_dir: Path) -> InteractionData:
    """MovieLens 100K loaded once per session."""
    from flexrec.data.movielens import load_movielens_100k

    return load_movielens_100k(ml100k_dir)


@pytest.fixture(scope="session")
def ml_latest_small() -> InteractionData:
    """MovieLens latest-small from the copy embedded in the package, loaded once per session."""
    from flexrec.data.loaders import EMBEDDED_DIR
    from flexrec.data.movielens import load_movielens_latest

    return load_movielens_latest(EMBEDDED_DIR / "ml-latest-small")


# ---------------------------------------------------------------- implicit-feedback files
def play_counts(num_users: int = 240, num_items: int = 300, seed: int = 0) -> pd.DataFrame:
    """A Last.fm-like play-count table: string user and artist ids, no timestamp, heavy-tailed
    counts.

    Users follow 24–90 artists drawn by a Zipf popularity; a user's plays of an artist are their
    (log-normal) activity times the artist's (log-normal) appeal times a log-normal taste, so
    heavy users' counts dwarf light users' and an artist's earlier plays say something about the
    next ones.
    """
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, num_items + 1) ** 0.9
    popularity /= popularity.sum()
    names = [f"artist_{i:03d}" for i in rng.permutation(num_items)]
    appeal = rng.lognormal(0.0, 1.0, num_items)
    rows = []
    for user in range(num_users):
        n = int(np.clip(rng.lognormal(3.2, 0.5), 24, 90))
        items = rng.choice(num_items, n, replace=False, p=popularity)
        activity = rng.lognormal(3.3, 1.3)
        plays = np.ceil(activity * appeal[items] * rng.lognormal(0.0, 1.4, n)).astype(np.int64)
        rows += [(f"user_{user:04d}", names[i], int(p)) for i, p in zip(items, plays, strict=True)]
    return pd.DataFrame(rows, columns=["user", "artist", "plays"])


@pytest.fixture
def plays_file(tmp_path: Path) -> Path:
    """``my_plays.tsv``: :func:`play_counts` written tab-separated (user, artist, plays)."""
    path = tmp_path / "my_plays.tsv"
    play_counts().to_csv(path, sep="\t", index=False)
    return path


@pytest.fixture
def clicks_file(tmp_path: Path) -> Path:
    """``my_clicks.csv``: the same pairs as a bare interaction log (user, artist, interacted=1)."""
    path = tmp_path / "my_clicks.csv"
    play_counts()[["user", "artist"]].assign(interacted=1).to_csv(path, index=False)
    return path
