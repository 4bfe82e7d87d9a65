"""Shared test set-up: offline hub, where the real data files are, known doctest failures.

A clean plug-in manager around every test and the tiny offline LLM (``tiny_llm_path``) come from
flexrec's own pytest plug-in, :mod:`flexrec.testing.pytest_plugin` (``usefixtures`` in
pyproject.toml), exactly as a plug-in package gets them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
# The real data files (MovieLens 100K / latest-small, KuaiRec side tables) live next to the clone;
# FLEXREC_SHARED_DATA points elsewhere (a missing folder checks what a bare clone skips).
SHARED_DATA = Path(os.environ.get("FLEXREC_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """Where the real data files are expected (it may not exist: fixtures using it skip)."""
    return SHARED_DATA
