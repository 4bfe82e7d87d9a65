"""flexrec's pluggy-based plug-in system: hook specifications and the lazily built manager."""

from __future__ import annotations

from flexrec.plugin.spec import ENTRY_POINT_GROUP, hookimpl, hookspec

__all__ = ["ENTRY_POINT_GROUP", "hookimpl", "hookspec"]
