"""Loader for the official KuaiRec 2.0 layout (``small_matrix.csv`` / ``big_matrix.csv`` + side tables).

Categories are the 31 tag ids of ``item_categories.csv`` (``feat``, 1–4 per video). Item text is the
caption and the first-level category name from ``kuairec_caption_category.csv`` when present;
``item_daily_features.csv`` (when present) is kept as per-item daily play counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd

from flexrec.data._io import find_file, read_table, require_numeric
from flexrec.data.dataset import DAY, KUAIREC_SCALE, InteractionData
from flexrec.errors import DataError

__all__ = ["MATRIX_COLUMNS", "load_caption_table", "load_item_categories", "load_kuairec"]

MATRIX_COLUMNS = (
    "user_id",
    "video_id",
    "play_duration",
    "video_duration",
    "time",
    "date",
    "timestamp",
    "watch_ratio",
)


def _parse_feat(value: str, line: int) -> list[int]:
    try:
        parsed = ast.literal_eval(str(value))
    except (ValueError, SyntaxError) as exc:
        raise DataError(
            f"item_categories.csv line {line}: column 'feat' is not a list ({value!r})"
        ) from exc
    if isinstance(parsed, int):
        parsed = [parsed]
    if not all(isinstance(v, int) for v in parsed):
        raise DataError(f"item_categories.csv line {line}: column 'feat' is not a list of ints")
    return list(parsed)


def load_item_categories(path: str | Path) -> pd.DataFrame:
    """``item_categories.csv`` → columns ``item`` (video id) and ``categories`` (tag id lists)."""
    table = read_table(Path(path), ",", required=["video_id", "feat"])
    table = require_numeric(table, {"video_id": "int"}, Path(path).name)
    feats = [_parse_feat(v, i + 2) for i, v in enumerate(table["feat"])]
    return pd.DataFrame({"item": table["video_id"].to_numpy(), "categories": feats})


def load_caption_table(path: str | Path) -> pd.DataFrame:
    """``kuairec_caption_category.csv`` (python parser: captions contain newlines).

    Returns:
        columns ``item``, ``caption``, ``category`` (first-level name); rows whose ``video_id`` is
        not numeric are dropped.
    """
    table = read_table(
        Path(path),
        ",",
        required=["video_id", "caption", "first_level_category_name"],
        engine="python",
    )
    ids = pd.to_numeric(table["video_id"], errors="coerce")
    table = table[ids.notna()].assign(video_id=ids[ids.notna()].astype(np.int64))
    clean = table.fillna("").replace({"UNKNOWN": ""})
    return pd.DataFrame(
        {
            "item": clean["video_id"].to_numpy(),
            "caption": clean["caption"]
            .astype(str)
            .str.replace(r"\s+", " ", regex=True)
            .str.strip(),
            "category": clean["first_level_category_name"].astype(str),
        }
    )


def _epoch_day(date: pd.Series) -> np.ndarray:
    parsed = pd.to_datetime(date.astype("Int64").astype(str), format="%Y%m%d", errors="coerce")
    return (parsed - pd.Timestamp("1970-01-01")).dt.days.fillna(-1).to_numpy(np.int64)


def _matrix(file: Path) -> tuple[pd.DataFrame, int]:
    table = read_table(file, ",", required=["user_id", "video_id", "watch_ratio", "timestamp"])
    kinds = {"user_id": "int", "video_id": "int", "watch_ratio": "float", "timestamp": "float"}
    allow = ["timestamp"]
    if "date" in table.columns:
        kinds["date"] = "float"
        allow.append("date")
    table = require_numeric(table, kinds, file.name, allow_missing=allow)
    stamp = table["timestamp"].to_numpy(np.float64)
    if "date" in table.columns:
        from_date = _epoch_day(table["date"]).astype(np.float64) * DAY
        stamp = np.where(np.isnan(stamp) & (from_date >= 0), from_date, stamp)
    keep = ~np.isnan(stamp)
    frame = pd.DataFrame(
        {
            "user": table["user_id"].to_numpy()[keep],
            "item": table["video_id"].to_numpy()[keep],
            "label": table["watch_ratio"].to_numpy(np.float64)[keep],
            "timestamp": np.floor(stamp[keep]).astype(np.int64),
        }
    )
    return frame, int((~keep).sum())


def load_kuairec(
    path: str | Path, matrix: str = "small", name: str | None = None
) -> InteractionData:
    """KuaiRec 2.0 from a folder with ``{matrix}_matrix.csv`` and ``item_categories.csv``.

    Args:
        path: folder with the KuaiRec ``data/`` files.
        matrix: ``small`` (fully observed 1,411 × 3,327) or ``big``.
        name: dataset name (default ``kuairec`` / ``kuairec-big``).

    Returns:
        Watch-ratio interactions; rows without any time (no ``timestamp`` nor ``date``) are
        dropped and counted in ``provenance['dropped_rows']``.

    Raises:
        DataError: a missing or malformed file.
    """
    if matrix not in ("small", "big"):
        raise DataError(f"unknown KuaiRec matrix {matrix!r}; valid: small, big")
    root = Path(path)
    file = find_file(root, f"{matrix}_matrix.csv", f"{matrix}_matrix.csv.gz")
    assert file is not None
    interactions, dropped = _matrix(file)
    cat_file = find_file(root, "item_categories.csv")
    assert cat_file is not None
    items = load_item_categories(cat_file)
    num_tags = int(max((max(c) for c in items["categories"] if c), default=-1)) + 1
    items["title"] = "video " + items["item"].astype(str)
    items["year"] = -1
    items["text"] = ""
    caption_file = find_file(root, "kuairec_caption_category.csv", required=False)
    if caption_file is not None:
        captions = load_caption_table(caption_file).drop_duplicates("item").set_index("item")
        caption = items["item"].map(captions["caption"]).fillna("")
        category = items["item"].map(captions["category"]).fillna("")
        items["text"] = (category + ": " + caption).str.strip(": ")
    extra: dict[str, object] = {}
    users_file = find_file(root, "user_features.csv", required=False)
    if users_file is not None:
        users = read_table(users_file, ",", required=["user_id"])
        extra["user_features"] = require_numeric(
            users, {"user_id": "int"}, users_file.name
        ).set_index("user_id")
    daily_file = find_file(root, "item_daily_features.csv", required=False)
    if daily_file is not None:
        daily = read_table(daily_file, ",", required=["video_id", "date", "play_cnt"])
        daily = require_numeric(
            daily, {"video_id": "int", "date": "int", "play_cnt": "float"}, daily_file.name
        )
        extra["item_daily"] = pd.DataFrame(
            {
                "item": daily["video_id"].to_numpy(),
                "day": _epoch_day(daily["date"]),
                "count": daily["play_cnt"].to_numpy(np.float64),
            }
        )
    return InteractionData.build(
        name or ("kuairec" if matrix == "small" else "kuairec-big"),
        interactions,
        items,
        [f"tag {i}" for i in range(num_tags)],
        KUAIREC_SCALE,
        trend_window=DAY,
        provenance={"source": str(root), "layout": f"kuairec-{matrix}", "dropped_rows": dropped},
        **extra,
    )
