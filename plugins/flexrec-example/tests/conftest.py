"""Every test starts and ends with a plug-in manager built from a clean environment."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flexrec.plugin.manager import reset_plugin_manager


@pytest.fixture(autouse=True)
def _fresh_plugin_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("FLEXREC_PLUGINS", "FLEXREC_DISABLED_PLUGINS", "FLEXREC_DISABLE_PLUGIN_AUTOLOAD"):
        monkeypatch.delenv(var, raising=False)
    reset_plugin_manager()
    yield
    reset_plugin_manager()
