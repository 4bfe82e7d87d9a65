"""``LoaderOptions``: how an interactions file is read and how its labels are understood.

One typed value carries every loader setting from a config (``data.init_args.loader``), the command
line (``--data.init_args.loader.sep=tab``) or ``flexrec data info`` (``--sep tab``) to
:func:`~flexrec.data.generic.load_interactions`; jsonargparse validates it, so a misspelt key fails
before any data is read.

Examples:
    >>> LoaderOptions(sep="tab", columns={"item": "artist", "label": "plays"}).separator
    '\\t'
    >>> loader_options({"sep": ";", "labels": "quantile"}).labels
    'quantile'
    >>> loader_options({"seperator": ";"})
    Traceback (most recent call last):
    ...
    flexrec.errors.ConfigError: unknown loader option 'seperator'; valid: sep, columns, category_sep, labels, quantiles, label_scale, label_name, trend_window
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from flexrec.errors import ConfigError, check_number

__all__ = [
    "COLUMN_ROLES",
    "LABEL_RULES",
    "SEPARATORS",
    "LoaderOptions",
    "loader_options",
    "separator",
]

LABEL_RULES = ("auto", "range", "quantile", "interacted")
"""How labels become a :class:`~flexrec.data.dataset.LabelScale` (:mod:`flexrec.data.labels`)."""

SEPARATORS = {
    "tab": "\t",
    "\\t": "\t",
    "comma": ",",
    "semicolon": ";",
    "pipe": "|",
    "space": r"\s+",
    "whitespace": r"\s+",
}
"""Names a separator may be given by (a tab is hard to type in YAML or a shell)."""

SCALE_KEYS = ("minimum", "maximum", "threshold", "relevant", "name")
COLUMN_ROLES = ("user", "item", "label", "timestamp", "categories", "title", "text")
"""The roles a column can play (``user``, ``item`` and ``label`` are required)."""


def separator(value: str | None) -> str | None:
    """The separator a name or escape stands for (``tab`` → a tab); None stays None (infer).

    Raises:
        ConfigError: an empty separator.
    """
    if value is None:
        return None
    if value == "":
        raise ConfigError("loader.sep is empty: give a character, 'tab', 'comma' or leave it unset")
    return SEPARATORS.get(value.lower() if len(value) > 1 else value, value)


@dataclass(frozen=True)
class LoaderOptions:
    """Settings of the interactions-file loader (``data.init_args.loader``).

    Args:
        sep: column separator: a character, ``::``, or ``tab`` / ``comma`` / ``semicolon`` /
            ``pipe`` / ``whitespace``; unset: inferred from the file (``.tsv`` / ``.tab`` → tab,
            ``.dat`` → ``::`` when its header has one, otherwise the separator the header line
            uses, see :func:`flexrec.data._io.infer_separator`).
        columns: role → column name (roles ``user``, ``item``, ``label``, ``timestamp``,
            ``categories``, ``title``, ``text``); a role left out uses the column of its own name.
        category_sep: separator of category names inside the categories column.
        labels: how labels are read (:mod:`flexrec.data.labels`): ``auto`` (ratings keep their
            range, counts and other continuous values get quantile thresholds, a constant label
            means "interacted"), ``range``, ``quantile`` or ``interacted``.
        quantiles: the label quantiles of the interest threshold τ, of relevance and of
            saturation, for ``quantile`` (increasing, in (0, 1)).
        label_scale: an explicit scale (``minimum``, ``maximum``, ``threshold``, ``relevant``,
            optional ``name``); overrides ``labels``.
        label_name: what the label is, for prompts (default: the label column's name).
        trend_window: window of the trend features and ``trend_promotion``: seconds, or rows when
            the file has no timestamp (default 30 days, or a twentieth of the rows).
    """

    sep: str | None = None
    columns: dict[str, str] | None = None
    category_sep: str = "|"
    labels: Literal["auto", "range", "quantile", "interacted"] = "auto"
    quantiles: tuple[float, float, float] = (0.5, 0.75, 0.95)
    label_scale: dict[str, Any] | None = None
    label_name: str | None = None
    trend_window: int | None = None

    def __post_init__(self) -> None:
        separator(self.sep)
        for role, column in (self.columns or {}).items():
            if role not in COLUMN_ROLES:
                raise ConfigError(f"unknown column role {role!r}; valid: {', '.join(COLUMN_ROLES)}")
            if not isinstance(column, str) or not column:
                raise ConfigError(f"loader.columns.{role} must be a column name, got {column!r}")
        if self.labels not in LABEL_RULES:
            raise ConfigError(
                f"loader.labels must be one of {list(LABEL_RULES)}, got {self.labels!r}"
            )
        qs = tuple(self.quantiles)
        if len(qs) != 3:
            raise ConfigError(
                f"loader.quantiles must be 3 numbers (τ, relevant, maximum), got {qs}"
            )
        for q in qs:
            check_number("loader.quantiles", q, above=0, maximum=1)
        if not qs[0] < qs[1] <= qs[2]:
            raise ConfigError(
                f"loader.quantiles must increase (τ < relevant <= maximum), got {list(qs)}"
            )
        if self.label_scale is not None:
            unknown = sorted(set(self.label_scale) - set(SCALE_KEYS))
            if unknown:
                raise ConfigError(
                    f"unknown loader.label_scale key {unknown[0]!r}; valid: {', '.join(SCALE_KEYS)}"
                )
            missing = [k for k in SCALE_KEYS[:4] if k not in self.label_scale]
            if missing:
                raise ConfigError(f"loader.label_scale needs {', '.join(missing)}")
            values = [self.label_scale[k] for k in SCALE_KEYS[:4]]
            for key, value in zip(SCALE_KEYS, values, strict=False):
                check_number(f"loader.label_scale.{key}", value)
            low, top, tau, relevant = values
            if not low <= tau < top or not tau < relevant <= top:
                raise ConfigError(
                    "loader.label_scale must have minimum <= threshold < relevant <= maximum, "
                    f"got minimum={low}, threshold={tau}, relevant={relevant}, maximum={top}"
                )
        check_number(
            "loader.trend_window", self.trend_window, above=0, integer=True, allow_none=True
        )

    @property
    def separator(self) -> str | None:
        """The separator itself (``tab`` → a tab), None to infer it."""
        return separator(self.sep)

    @property
    def file_options(self) -> dict[str, Any]:
        """The options that only make sense for a file (not for a named dataset) and are set."""
        return {
            key: getattr(self, key)
            for key in ("sep", "columns", "category_sep")
            if getattr(self, key) != _DEFAULTS[key]
        }

    def as_dict(self) -> dict[str, Any]:
        """Plain values (lists, dicts) for hyper-parameters and checkpoints."""
        out = dataclasses.asdict(self)
        out["quantiles"] = list(self.quantiles)
        return out


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(LoaderOptions)}


def loader_options(value: LoaderOptions | Mapping[str, Any] | None) -> LoaderOptions:
    """``value`` as :class:`LoaderOptions` (a mapping from Python or an old checkpoint, None →
    defaults).

    Raises:
        ConfigError: an unknown option or a bad value.
    """
    if value is None:
        return LoaderOptions()
    if isinstance(value, LoaderOptions):
        return value
    if hasattr(value, "as_dict"):  # a jsonargparse namespace
        value = value.as_dict()
    if not isinstance(value, Mapping):
        raise ConfigError(f"loader must be a mapping of loader options, got {value!r}")
    valid = list(_DEFAULTS)
    for key in value:
        if key not in valid:
            raise ConfigError(f"unknown loader option {key!r}; valid: {', '.join(valid)}")
    kwargs = dict(value)
    if kwargs.get("quantiles") is not None:
        kwargs["quantiles"] = tuple(kwargs["quantiles"])
    return LoaderOptions(**kwargs)
