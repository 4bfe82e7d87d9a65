"""Fixtures of the data tests: the shared real files (skipped cleanly when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flexrec.data.dataset import InteractionData

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _folder(name: str) -> Path:
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"real data {folder} not available (expected ../shared/data/{name})")
    return folder


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (relative to the repository root)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} not available")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    """The real MovieLens 100K folder."""
    return _folder("ml-100k")


@pytest.fixture(scope="session")
def ml_latest_small_dir() -> Path:
    """The real MovieLens latest-small folder."""
    return _folder("ml-latest-small")


@pytest.fixture(scope="session")
def kuairec_side_dir() -> Path:
    """The real KuaiRec 2.0 side tables."""
    return _folder("kuairec-side")


@pytest.fixture(scope="session")
def ml100k(ml100k_dir: Path) -> InteractionData:
    """MovieLens 100K loaded once per session."""
    from flexrec.data.movielens import load_movielens_100k

    return load_movielens_100k(ml100k_dir)
