"""Exceptions that the command line reports as one line with exit status 2."""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "FlexRecError", "PluginError"]


class FlexRecError(Exception):
    """Base of user-facing errors: bad configuration, data or plug-ins (not bugs)."""


class ConfigError(FlexRecError, ValueError):
    """A configuration names an unknown component or passes bad arguments."""


class DataError(FlexRecError, ValueError):
    """A data file is missing or malformed."""


class PluginError(FlexRecError, RuntimeError):
    """A plug-in failed to load or registers conflicting components."""
