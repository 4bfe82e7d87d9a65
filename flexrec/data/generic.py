"""Generic interactions loader: a CSV or Parquet file plus a column mapping (bring your own data).

Example::

    data = load_interactions(
        "clicks.parquet",
        columns={"user": "uid", "item": "sku", "label": "stars", "timestamp": "ts",
                 "categories": "tags", "title": "name"},
        category_sep=";",
    )
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from flexrec.data._io import read_table, require_numeric
from flexrec.data.dataset import DAY, InteractionData, LabelScale
from flexrec.errors import DataError

__all__ = ["COLUMN_ROLES", "load_interactions"]

COLUMN_ROLES = ("user", "item", "label", "timestamp", "categories", "title", "text")
_REQUIRED = ("user", "item", "label")


def _read(path: Path, sep: str) -> pd.DataFrame:
    if path.suffix == ".parquet":
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise DataError(f"{path.name}: not a readable Parquet file ({exc})") from exc
        if frame.empty:
            raise DataError(f"{path.name}: no data rows")
        return frame
    return read_table(path, sep)


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


def load_interactions(
    path: str | Path,
    columns: Mapping[str, str] | None = None,
    sep: str = ",",
    category_sep: str = "|",
    name: str | None = None,
    scale: LabelScale | None = None,
    trend_window: int = 30 * DAY,
) -> InteractionData:
    """Load interactions from a CSV (``sep``) or ``.parquet`` file.

    Args:
        path: the file.
        columns: role → column name for the roles ``user``, ``item``, ``label`` (required),
            ``timestamp`` (epoch seconds or date strings; default: row order), ``categories``
            (``category_sep``-joined names), ``title`` and ``text``; unmapped roles default to
            the column of the same name when present.
        sep: CSV separator.
        category_sep: separator of category names inside the categories column.
        name: dataset name (default: the file stem).
        scale: label scale; default: min/max of the labels, τ at the midpoint and relevance at
            the midpoint of τ and max.
        trend_window: ``trend_promotion`` window in seconds.

    Returns:
        The dataset; item side information comes from each item's first row.

    Raises:
        DataError: missing file or column, non-numeric labels, unparsable times.
    """
    path = Path(path)
    frame = _read(path, sep)
    frame.columns = [str(c) for c in frame.columns]
    mapping = {role: role for role in COLUMN_ROLES if role in frame.columns}
    for role, column in (columns or {}).items():
        if role not in COLUMN_ROLES:
            raise DataError(f"unknown column role {role!r}; valid: {', '.join(COLUMN_ROLES)}")
        mapping[role] = column
    for role in _REQUIRED:
        if role not in mapping:
            raise DataError(f"{path.name}: no column for {role!r} (pass columns={{{role!r}: ...}})")
    for column in mapping.values():
        if column not in frame.columns:
            raise DataError(f"{path.name}: missing column {column!r}")
    frame = require_numeric(frame, {mapping["label"]: "float"}, path.name)
    if "timestamp" in mapping:
        stamps = _timestamps(frame[mapping["timestamp"]], path.name)
    else:
        stamps = np.arange(len(frame), dtype=np.int64)
    interactions = pd.DataFrame(
        {
            "user": frame[mapping["user"]].to_numpy(),
            "item": frame[mapping["item"]].to_numpy(),
            "label": frame[mapping["label"]].to_numpy(np.float64),
            "timestamp": stamps,
        }
    )
    first = frame.drop_duplicates(mapping["item"], keep="first")
    cat_lists = (
        first[mapping["categories"]].fillna("").astype(str).str.split(category_sep)
        if "categories" in mapping
        else pd.Series([[] for _ in range(len(first))], index=first.index)
    )
    names = sorted({c.strip() for cs in cat_lists for c in cs if c.strip()})
    index = {c: i for i, c in enumerate(names)}
    items = pd.DataFrame(
        {
            "item": first[mapping["item"]].to_numpy(),
            "title": first[mapping["title"]].astype(str).to_numpy()
            if "title" in mapping
            else first[mapping["item"]].astype(str).to_numpy(),
            "year": -1,
            "categories": [sorted({index[c.strip()] for c in cs if c.strip()}) for cs in cat_lists],
            "text": first[mapping["text"]].fillna("").astype(str).to_numpy()
            if "text" in mapping
            else "",
        }
    )
    if scale is None:
        low, high = float(interactions["label"].min()), float(interactions["label"].max())
        tau = (low + high) / 2
        scale = LabelScale(low, high, tau, (tau + high) / 2, "label")
    return InteractionData.build(
        name or path.stem,
        interactions,
        items,
        names,
        scale,
        trend_window=trend_window,
        provenance={"source": str(path), "layout": "generic", "columns": dict(mapping)},
    )
