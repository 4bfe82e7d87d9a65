"""Exceptions that the command line reports as one line with exit status 2."""

from __future__ import annotations

import errno
import math

__all__ = [
    "OUTPUT_ERRNOS",
    "ConfigError",
    "DataError",
    "DataWarning",
    "FlexRecError",
    "OutputError",
    "PluginError",
    "check_number",
    "output_error",
]


class FlexRecError(Exception):
    """Base of user-facing errors: bad configuration, data or plug-ins (not bugs)."""


class ConfigError(FlexRecError, ValueError):
    """A configuration names an unknown component or passes bad arguments."""


class DataError(FlexRecError, ValueError):
    """A data file is missing or malformed."""


class DataWarning(UserWarning):
    """Data that works but probably not as meant (mostly flat tasks, row order as time); the
    command line prints it as one line ``flexrec: warning: ...``."""


class PluginError(FlexRecError, RuntimeError):
    """A plug-in failed to load or registers conflicting components, or a component returned
    what training cannot use (a need's non-finite gain, a reward of the wrong shape; see the
    run-time checks in docs/concepts/plugins.md)."""


class OutputError(FlexRecError, OSError):
    """An output file or folder cannot be written (disk full, read-only, a path through a file)
    or is in use by another process."""


OUTPUT_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EEXIST,
    }
)
"""The ``errno`` values of an ``OSError`` that the command line reports as a user error: the
environment refuses a write (no space, quota, read-only or forbidden, a path through a file, a file where a
folder should be)."""


def output_error(exc: OSError) -> OutputError | None:
    """A one-line :class:`OutputError` for an ``OSError`` of :data:`OUTPUT_ERRNOS`, else None.

    Examples:
        >>> output_error(OSError(errno.ENOSPC, "No space left on device", "/out/x.ckpt"))
        OutputError('cannot write /out/x.ckpt: No space left on device')
        >>> output_error(OSError(errno.ENOENT, "No such file or directory", "x")) is None
        True
    """
    if isinstance(exc, OutputError):
        return exc
    if exc.errno not in OUTPUT_ERRNOS:
        return None
    where = exc.filename if exc.filename is not None else "output"
    return OutputError(f"cannot write {where}: {exc.strerror or exc}")


def check_number(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
    integer: bool = False,
    allow_none: bool = False,
) -> None:
    """Check a numeric setting where it is owned, so a bad value fails before any work.

    Args:
        name: the setting's name, for the message.
        value: its value.
        minimum: the least allowed value.
        above: a bound the value must exceed.
        maximum: the largest allowed value.
        integer: the value must be an ``int``.
        allow_none: None is allowed (an optional setting).

    Raises:
        ConfigError: ``group_size must be >= 1, got 0``.

    Examples:
        >>> check_number("group_size", 0, minimum=1, integer=True)
        Traceback (most recent call last):
        ...
        flexrec.errors.ConfigError: group_size must be >= 1, got 0
        >>> check_number("sparse_p", 1.5, above=0, maximum=1, allow_none=True)
        Traceback (most recent call last):
        ...
        flexrec.errors.ConfigError: sparse_p must be > 0 and <= 1 or null, got 1.5
    """
    if value is None and allow_none:
        return
    rules = [
        f"{op} {bound}"
        for op, bound in ((">=", minimum), (">", above), ("<=", maximum))
        if bound is not None
    ]
    rule = " and ".join(rules) or "a finite number"
    rule += " or null" if allow_none else ""
    kinds = (int,) if integer else (int, float)
    if not isinstance(value, kinds) or isinstance(value, bool):
        what = "an integer" if integer else "a number"
        raise ConfigError(f"{name} must be {what} ({rule}), got {value!r}")
    ok = math.isfinite(value)
    ok = ok and (minimum is None or value >= minimum) and (above is None or value > above)
    if not (ok and (maximum is None or value <= maximum)):
        raise ConfigError(f"{name} must be {rule}, got {value!r}")
