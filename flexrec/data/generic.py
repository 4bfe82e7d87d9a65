"""Generic interactions loader: a delimited or Parquet file plus a column mapping (bring your own
data).

Example::

    data = load_interactions(
        "plays.tsv",
        columns={"item": "artist", "label": "plays"},   # user: the column named "user"
        labels="auto",                                  # counts: quantile thresholds
    )

Identifiers may be numbers or strings (kept as written: ``"007"`` stays ``"007"``; a column mixing
numbers and text is read as text); an empty identifier is an error naming its line. Without a
timestamp column the row number is the time (:attr:`InteractionData.time_unit` ``rows``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from flexrec.data._io import columns_hint, infer_separator, read_table, require_numeric, sep_name
from flexrec.data.dataset import DAY, InteractionData, LabelScale
from flexrec.data.labels import choose_scale
from flexrec.data.options import COLUMN_ROLES, LoaderOptions
from flexrec.errors import DataError

__all__ = ["COLUMN_ROLES", "ROW_TREND_SHARE", "load_interactions", "with_labels"]

_REQUIRED = ("user", "item", "label")
ROW_TREND_SHARE = 20
"""Without timestamps the default trend window is ``rows // ROW_TREND_SHARE`` rows."""


def _read(path: Path, sep: str | None) -> tuple[pd.DataFrame, str]:
    """The table and how its separator was chosen."""
    if path.suffix == ".parquet":
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise DataError(f"{path.name}: not a readable Parquet file ({exc})") from exc
        if frame.empty:
            raise DataError(f"{path.name}: no data rows")
        return frame, "parquet"
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    how = "given"
    if sep is None:
        sep, how = infer_separator(path)
    frame = read_table(path, sep, as_text=True)
    frame.attrs["sep"] = sep
    return frame, f"{sep_name(sep)}-separated ({how})"


def _ids(values: pd.Series, file: str, role: str) -> np.ndarray:
    """Identifiers as written: a column of plain integers (``17``, not ``007``) becomes int64,
    anything else text (so ``007`` and ``7`` stay two ids).

    Raises:
        DataError: an empty identifier (``plays.tsv line 7: column 'user' (user id) is empty``).
    """
    empty = values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        raise DataError(f"{file} line {row + 2}: column {values.name!r} ({role} id) is empty")
    if pd.api.types.is_integer_dtype(values) or pd.api.types.is_bool_dtype(values):
        return values.to_numpy(np.int64)
    if pd.api.types.is_float_dtype(values):
        numbers = values.to_numpy(np.float64)
        if np.all(numbers == np.round(numbers)):
            return numbers.astype(np.int64)
    # text, or a mix of types (Parquet object columns): one type, so ids sort and compare
    text = values.astype(str)
    if text.str.fullmatch(r"-?(0|[1-9]\d{0,17})").all():
        return text.astype(np.int64).to_numpy()
    return text.to_numpy(object)


def _timestamps(values: pd.Series, file: str) -> np.ndarray:
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        return np.floor(numeric.to_numpy(np.float64)).astype(np.int64)
    parsed = pd.to_datetime(values, errors="coerce", utc=True)
    if parsed.isna().any():
        row = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        raise DataError(
            f"{file} line {row + 2}: column {values.name!r} is not a time ({values.iloc[row]!r})"
        )
    return (parsed.astype("int64") // 10**9).to_numpy(np.int64)


def _mapping(frame: pd.DataFrame, columns: Mapping[str, str] | None, file: str) -> dict[str, str]:
    found = [str(c) for c in frame.columns]
    mapping = {role: role for role in COLUMN_ROLES if role in found}
    mapping |= dict(columns or {})  # roles checked by LoaderOptions
    sep = frame.attrs.get("sep", ",")
    if len(found) == 1:
        # one column where three are needed: the separator is wrong, not the column names
        raise DataError(f"{file}: {columns_hint(found, sep)}; need columns for user, item, label")
    for role, column in mapping.items():
        if column not in found:
            raise DataError(
                f"{file}: missing column {column!r} for {role!r} ({columns_hint(found, sep)})"
            )
    for role in _REQUIRED:
        if role not in mapping:
            raise DataError(
                f"{file}: no column for {role!r} ({columns_hint(found, sep)}); "
                f"map one with columns: {{{role}: <column>}}"
            )
    return mapping


def with_labels(
    data: InteractionData,
    labels: str = "auto",
    quantiles: Sequence[float] = (0.5, 0.75, 0.95),
    scale: LabelScale | None = None,
    label_name: str | None = None,
) -> InteractionData:
    """``data`` with the label scale of a rule (:mod:`flexrec.data.labels`) or an explicit one.

    ``interacted`` also rewrites the labels to 1 (label > 0) and 0. The chosen scale and why go to
    ``provenance["labels"]``.
    """
    name = label_name or (scale.name if scale is not None else "") or data.scale.name
    label = data.label
    if scale is not None:
        chosen = dataclasses.replace(scale, name=name, rule="explicit")
        why = "explicit: the given label_scale"
    else:
        chosen, why = choose_scale(label, labels, quantiles, name)
        if chosen.rule == "interacted":
            label = (label > 0).astype(np.float64)
    provenance = {**data.provenance, "labels": why}
    return dataclasses.replace(data, label=label, scale=chosen, provenance=provenance)


def load_interactions(
    path: str | Path,
    columns: Mapping[str, str] | None = None,
    sep: str | None = None,
    category_sep: str = "|",
    name: str | None = None,
    scale: LabelScale | None = None,
    trend_window: int | None = None,
    labels: str = "auto",
    quantiles: Sequence[float] = (0.5, 0.75, 0.95),
    label_name: str | None = None,
) -> InteractionData:
    """Load interactions from a delimited (``sep``) or ``.parquet`` file.

    The arguments are those of :class:`~flexrec.data.options.LoaderOptions` (a config's
    ``data.init_args.loader``), plus the dataset ``name`` and ``scale`` as a
    :class:`~flexrec.data.dataset.LabelScale`.

    Args:
        path: the file (``.csv``, ``.tsv``, ``.dat``, ... possibly ``.gz``; or ``.parquet``).
        columns: role → column name for the roles ``user``, ``item``, ``label`` (required),
            ``timestamp`` (epoch seconds or date strings; default: row order), ``categories``
            (``category_sep``-joined names), ``title`` and ``text``; unmapped roles default to
            the column of the same name when present.
        sep: separator (a character, ``::`` or a name such as ``tab``); None: inferred.
        category_sep: separator of category names inside the categories column.
        name: dataset name (default: the file stem).
        scale: explicit label scale (overrides ``labels``).
        trend_window: trend window in seconds, or in rows without timestamps (default: 30 days,
            or a twentieth of the rows).
        labels: label rule (``auto``, ``range``, ``quantile``, ``interacted``).
        quantiles: quantiles of τ, relevance and saturation for the ``quantile`` rule.
        label_name: what the label is in prompts (default: the label column's name).

    Returns:
        The dataset; item side information comes from each item's first row; the separator, the
        column mapping, the label rule and the clock are in ``provenance``.

    Raises:
        ConfigError: a bad option (unknown role, label rule or quantile).
        DataError: a missing file or column (the message lists the columns found), an empty id,
            a non-numeric label, an unparsable time.
    """
    options = LoaderOptions(
        sep=sep,
        columns=dict(columns) if columns is not None else None,
        category_sep=category_sep,
        labels=labels,  # type: ignore[arg-type]
        quantiles=tuple(quantiles),  # type: ignore[arg-type]
        label_name=label_name,
        trend_window=trend_window,
    )
    path = Path(path)
    frame, how = _read(path, options.separator)
    frame.columns = [str(c).strip() for c in frame.columns]
    mapping = _mapping(frame, options.columns, path.name)
    frame = require_numeric(frame, {mapping["label"]: "float"}, path.name)
    users = _ids(frame[mapping["user"]], path.name, "user")
    item_ids = _ids(frame[mapping["item"]], path.name, "item")
    if "timestamp" in mapping:
        stamps, unit = _timestamps(frame[mapping["timestamp"]], path.name), "seconds"
        window = 30 * DAY if trend_window is None else trend_window
    else:
        stamps, unit = np.arange(len(frame), dtype=np.int64), "rows"
        window = max(1, len(frame) // ROW_TREND_SHARE) if trend_window is None else trend_window
    interactions = pd.DataFrame(
        {
            "user": users,
            "item": item_ids,
            "label": frame[mapping["label"]].to_numpy(np.float64),
            "timestamp": stamps,
        }
    )
    frame = frame.assign(**{mapping["item"]: item_ids})
    first = frame.drop_duplicates(mapping["item"], keep="first")
    cat_lists = (
        first[mapping["categories"]].fillna("").astype(str).str.split(category_sep, regex=False)
        if "categories" in mapping
        else pd.Series([[] for _ in range(len(first))], index=first.index)
    )
    names = sorted({c.strip() for cs in cat_lists for c in cs if c.strip()})
    index = {c: i for i, c in enumerate(names)}
    items = pd.DataFrame(
        {
            "item": first[mapping["item"]].to_numpy(),
            # an empty title shows the item id, as an item without a title column does
            "title": first[mapping["title"]]
            .fillna(first[mapping["item"]].astype(str))
            .astype(str)
            .to_numpy()
            if "title" in mapping
            else first[mapping["item"]].astype(str).to_numpy(),
            "year": -1,
            "categories": [sorted({index[c.strip()] for c in cs if c.strip()}) for cs in cat_lists],
            "text": first[mapping["text"]].fillna("").astype(str).to_numpy()
            if "text" in mapping
            else "",
        }
    )
    label_name = label_name or (scale.name if scale is not None else "") or mapping["label"]
    data = InteractionData.build(
        name or path.stem,
        interactions,
        items,
        names,
        LabelScale(0.0, 1.0, 0.0, 1.0, label_name),  # replaced by with_labels below
        trend_window=int(window),
        time_unit=unit,
        provenance={
            "source": str(path),
            "layout": "generic",
            "format": how,
            "columns": dict(mapping),
        },
    )
    return with_labels(data, labels, quantiles, scale, label_name)
