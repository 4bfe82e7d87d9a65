"""Helpers that create real (tiny) installed distributions for entry-point discovery."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PLUGIN_SOURCE = '''
from flexrec.plugin import hookimpl
from flexrec.rewards.base import Reward


class TopHeavyReward(Reward):
    """Rewards only the first placed item with the list metric (a test component)."""

    name = "{reward_name}"

    def item_rewards(self, placed_gains, batch=None):
        out = placed_gains * 0.0
        out[..., 0] = placed_gains[..., 0]
        return out


@hookimpl
def flexrec_register_rewards():
    return [TopHeavyReward]
'''


def make_distribution(
    root: Path,
    dist: str,
    version: str,
    entry_point: str,
    module: str,
    source: str,
) -> Path:
    """Write ``module.py`` and a ``dist-info`` folder declaring a ``flexrec`` entry point."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[flexrec]\n{entry_point} = {module}\n")
    return root


@pytest.fixture
def installed_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Path]]:
    """Factory: install a tiny plug-in distribution on ``sys.path`` for this test."""
    modules: list[str] = []

    def install(
        dist: str = "flexrec-tiny",
        version: str = "1.2.3",
        entry_point: str = "tiny",
        module: str = "flexrec_tiny_plugin",
        reward_name: str = "top_heavy",
        source: str | None = None,
    ) -> Path:
        root = tmp_path / dist
        root.mkdir()
        make_distribution(
            root,
            dist,
            version,
            entry_point,
            module,
            source if source is not None else PLUGIN_SOURCE.format(reward_name=reward_name),
        )
        sys.modules.pop(module, None)
        modules.append(module)
        monkeypatch.syspath_prepend(str(root))
        importlib.invalidate_caches()
        return root

    yield install
    for module in modules:
        sys.modules.pop(module, None)


@pytest.fixture
def plugin_source() -> str:
    """Source of a plug-in module registering one reward; format it with ``reward_name``."""
    return PLUGIN_SOURCE
