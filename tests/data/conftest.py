"""Fixtures of the data tests: the embedded MovieLens copy, and the shared real files.

Tests that only need *a* dataset use the copy of ml-latest-small embedded in the package, so every
clone runs them; only tests of the real-file loaders use ``../shared/data`` (skipped cleanly when
absent, or when ``FLEXREC_SHARED_DATA`` points to a missing folder; see tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

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
