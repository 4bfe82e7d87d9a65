"""Reading delimited files with one-line, file-and-line-naming :class:`DataError` messages."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flexrec.errors import DataError

__all__ = ["columns_hint", "find_file", "infer_separator", "read_table", "require_numeric"]

_SEP_NAMES = {"\t": "tab", ",": "comma", "|": "pipe", "::": "'::'", ";": "semicolon"}
_SNIFFED = ("\t", ",", ";", "|")
_OPENERS: dict[str, Callable[..., Any]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def sep_name(sep: str) -> str:
    """``tab``, ``comma``, ... or the separator quoted."""
    return _SEP_NAMES.get(sep, "whitespace" if sep == r"\s+" else repr(sep))


def _head(path: Path, lines: int = 20) -> list[str]:
    """The first non-empty lines of a (possibly compressed) text file; [] when unreadable."""
    opener: Callable[..., Any] = _OPENERS.get(path.suffix.lower(), open)
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
            head = [line.rstrip("\r\n") for _, line in zip(range(lines), handle, strict=False)]
    except (OSError, EOFError, lzma.LZMAError, zlib.error):
        return []
    return [line for line in head if line.strip()]


def infer_separator(path: Path) -> tuple[str, str]:
    """``(separator, how it was chosen)`` of a delimited file with a header row.

    ``.tsv`` / ``.tab`` (also compressed: ``.tsv.gz``) → tab; ``.dat`` → ``::`` when the header has
    one. Otherwise the header line decides: the one of tab, comma, semicolon and pipe it contains
    (several: the one every sampled line has as often as the header; still a tie: that order);
    none of them but spaces → whitespace; nothing at all (one column) → comma.
    """
    name = path.name.lower()
    for ext in _OPENERS:
        name = name.removesuffix(ext)
    suffix = Path(name).suffix
    if suffix in (".tsv", ".tab"):
        return "\t", f"the {suffix} suffix"
    lines = _head(path)
    if not lines:
        return ",", "default (no header line to read)"
    header = lines[0]
    if suffix == ".dat" and "::" in header:
        return "::", "the .dat suffix and '::' in the header line"
    present = [sep for sep in _SNIFFED if sep in header]
    if len(present) > 1:
        steady = [sep for sep in present if all(ln.count(sep) == header.count(sep) for ln in lines)]
        present = steady or present
    if present:
        return present[0], f"the header line is {sep_name(present[0])}-separated"
    if len(header.split()) > 1:
        return r"\s+", "the header line is whitespace-separated"
    return ",", "default (the header line has a single column)"


def columns_hint(found: Sequence[str], sep: str) -> str:
    """``columns found: a, b, c`` and, when the header was not split, the separator it uses."""
    shown = ", ".join(repr(c) if len(found) == 1 else str(c) for c in found[:20])
    more = f", ... ({len(found)} in all)" if len(found) > 20 else ""
    hint = ""
    if len(found) == 1:
        others = [s for s in _SNIFFED if s != sep and s in str(found[0])]
        if others:
            hint = (
                f"; the header is {sep_name(others[0])}-separated: set sep: {sep_name(others[0])}"
            )
        hint = f" (1 column read with {sep_name(sep)}{hint})"
    return f"{'column' if len(found) == 1 else 'columns'} found: {shown}{more}{hint}"


def find_file(root: Path, *names: str, required: bool = True) -> Path | None:
    """The first of ``names`` (e.g. ``ratings.csv``, ``ratings.csv.gz``) that exists under ``root``.

    Raises:
        DataError: none exists and ``required``.
    """
    for name in names:
        if (root / name).is_file():
            return root / name
    if required:
        if not root.is_dir():
            raise DataError(f"{root}: data directory not found")
        raise DataError(f"{root}: missing file {names[0]!r}")
    return None


def read_table(
    path: Path,
    sep: str,
    names: Sequence[str] | None = None,
    required: Sequence[str] = (),
    encoding: str = "utf-8",
    engine: str = "c",
    as_text: bool = False,
) -> pd.DataFrame:
    """Read a delimited file, headerless (``names``) or with a header row.

    Headerless files, and any file with ``as_text``, are read as text (every cell a string, empty
    cells NaN with ``as_text``), so identifiers keep their exact spelling (``007``).

    ``'::'`` files (MovieLens 1M) are read by the fast C parser after rewriting the separator.

    Raises:
        DataError: empty, unreadable or truncated (compressed) file, no rows, wrong number of
            columns, missing column or unparsable row; the message names the file (and the line
            where known).
    """
    label = path.name
    try:
        if sep == "::":
            text = path.read_text(encoding=encoding).replace("::", "\x1f")
            source: io.StringIO | Path = io.StringIO(text)
            parse_sep = "\x1f"
        else:
            source, parse_sep = path, sep
        frame = pd.read_csv(
            source,
            sep=parse_sep,
            header=None if names is not None else 0,
            dtype=str if names is not None or as_text else None,
            encoding=encoding,
            engine=engine,
            keep_default_na=names is None,
            quoting=3 if names is not None else 0,
        )
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{label}: file is empty") from exc
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().splitlines()[-1].replace("Error tokenizing data. C error: ", "")
        raise DataError(f"{label}: {detail}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{label}: not {encoding} text ({exc.reason})") from exc
    except (EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as exc:
        # a truncated or corrupt compressed file (e.g. an interrupted download of ratings.csv.gz)
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"{path}: truncated or corrupt compressed file ({detail})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if frame.empty:
        raise DataError(f"{label}: no data rows")
    what = sep_name(sep)
    if names is not None:
        if frame.shape[1] != len(names):
            hint = " (wrong separator?)" if frame.shape[1] == 1 else ""
            raise DataError(
                f"{label}: expected {len(names)} {what}-separated columns, "
                f"found {frame.shape[1]}{hint}"
            )
        frame.columns = list(names)
        return frame
    frame.columns = [str(c).strip() for c in frame.columns]
    for column in required:
        if column not in frame.columns:
            hint = " (wrong separator?)" if frame.shape[1] == 1 and len(required) > 1 else ""
            raise DataError(f"{label}: missing column {column!r}{hint}")
    return frame


def require_numeric(
    frame: pd.DataFrame,
    columns: Mapping[str, str],
    file: str,
    header: bool = True,
    allow_missing: Sequence[str] = (),
) -> pd.DataFrame:
    """Convert ``columns`` (``name → 'int' | 'float'``) to numbers or raise naming the first bad line.

    Args:
        frame: the table as read.
        columns: the numeric columns and their kind.
        file: file name for messages.
        header: whether line 1 of the file is a header (line numbers are 1-based file lines).
        allow_missing: columns where an empty value becomes NaN instead of an error.

    Raises:
        DataError: ``ratings.csv line 17: column 'rating' is not a number ('abc')``.
    """
    out = frame.copy()
    offset = 2 if header else 1
    for column, kind in columns.items():
        raw = out[column]
        values = pd.to_numeric(raw, errors="coerce")
        empty = raw.isna() | (raw.astype(str).str.strip() == "")
        bad = values.isna() & ~empty
        if column not in allow_missing:
            bad |= empty
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            value = raw.iloc[row]
            problem = "is empty" if empty.iloc[row] else f"is not a number ({value!r})"
            raise DataError(f"{file} line {row + offset}: column {column!r} {problem}")
        if kind == "int" and column not in allow_missing:
            fractional = values.to_numpy(np.float64) % 1 != 0
            if fractional.any():
                row = int(np.flatnonzero(fractional)[0])
                raise DataError(
                    f"{file} line {row + offset}: column {column!r} is not an integer "
                    f"({raw.iloc[row]!r})"
                )
            values = values.astype(np.int64)
        out[column] = values
    return out
