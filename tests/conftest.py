"""Shared test set-up: offline hub, a clean plug-in manager around every test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _fresh_plugin_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts and ends with a plug-in manager built from the current environment."""
    from flexrec.plugin.manager import reset_plugin_manager

    for var in (
        "FLEXREC_PLUGINS",
        "FLEXREC_DISABLED_PLUGINS",
        "FLEXREC_DISABLE_PLUGIN_AUTOLOAD",
        "FLEXREC_TRACE_PLUGINS",
    ):
        monkeypatch.delenv(var, raising=False)
    reset_plugin_manager()
    yield
    reset_plugin_manager()


@pytest.fixture(scope="session")
def tiny_llm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a locally trained tokenizer (built once per session)."""
    from flexrec.testing.tiny_llm import build_tiny_llm

    return build_tiny_llm(tmp_path_factory.mktemp("tiny_llm"))
