"""``load_dataset``: one entry point for named datasets, dataset folders and interaction files.

Names and where they are read from (``root`` = the ``root`` argument, else ``$FLEXREC_DATA_DIR``):

- ``ml-latest-small``: the copy embedded in the package (no set-up), or ``root/ml-latest-small``
  when that folder exists.
- ``ml-100k``, ``ml-1m``, ``kuairec`` (``kuairec-big``): ``root/<name>`` in the official layout
  (KuaiRec: the ``data/`` folder of KuaiRec 2.0 renamed or linked as ``kuairec``).
- ``kuairec-sim``: ``root/kuairec-sim`` written by :func:`flexrec.data.simulator.write_simulation`,
  else simulated in memory (default settings) from the side tables in ``root/kuairec-side``.

Anything else is a path: a folder whose layout is recognised from its files, or a CSV / Parquet
file read by :func:`~flexrec.data.generic.load_interactions`.

:class:`~flexrec.data.options.LoaderOptions` say how a file is read (separator, columns) and how
labels are understood; the label options (``labels`` other than ``auto``, ``label_scale``,
``label_name``, ``trend_window``) also apply to named datasets, whose documented scale ``auto``
keeps.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flexrec.data.dataset import InteractionData, LabelScale
from flexrec.data.generic import load_interactions, with_labels
from flexrec.data.kuairec import load_kuairec
from flexrec.data.movielens import load_movielens_1m, load_movielens_100k, load_movielens_latest
from flexrec.data.options import LoaderOptions, loader_options
from flexrec.errors import ConfigError, DataError

__all__ = [
    "DATASETS",
    "EMBEDDED_DIR",
    "data_root",
    "detect_layout",
    "explicit_scale",
    "load_dataset",
]

EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
DATASETS = ("ml-latest-small", "ml-100k", "ml-1m", "kuairec", "kuairec-big", "kuairec-sim")


def data_root(root: str | Path | None = None) -> Path | None:
    """``root``, else ``$FLEXREC_DATA_DIR``, else None."""
    if root is not None:
        return Path(root)
    env = os.environ.get("FLEXREC_DATA_DIR", "").strip()
    return Path(env) if env else None


def detect_layout(folder: Path) -> str | None:
    """The official layout of a dataset folder (``movielens-100k``, ...) or None."""
    checks = (
        ("u.data", "movielens-100k"),
        ("ratings.dat", "movielens-1m"),
        ("ratings.csv", "movielens-latest"),
        ("ratings.csv.gz", "movielens-latest"),
        ("small_matrix.csv", "kuairec-small"),
        ("big_matrix.csv", "kuairec-big"),
    )
    for file, layout in checks:
        if (folder / file).is_file():
            return layout
    return None


def _load_folder(folder: Path, name: str | None = None) -> InteractionData:
    layout = detect_layout(folder)
    if layout == "movielens-100k":
        return load_movielens_100k(folder)
    if layout == "movielens-1m":
        return load_movielens_1m(folder)
    if layout == "movielens-latest":
        return load_movielens_latest(folder, name=name or folder.name)
    if layout in ("kuairec-small", "kuairec-big"):
        return load_kuairec(folder, matrix=layout.split("-")[1], name=name)
    raise DataError(
        f"{folder}: no known dataset layout (expected u.data, ratings.dat, ratings.csv or "
        "small_matrix.csv)"
    )


def _need_root(name: str, root: Path | None) -> Path:
    if root is None:
        hint = " or run `flexrec data download ml-100k`" if name == "ml-100k" else ""
        raise DataError(
            f"dataset {name!r} is not bundled: set FLEXREC_DATA_DIR or pass root=<folder "
            f"containing {name}/>{hint}"
        )
    folder = root / name
    if not folder.is_dir():
        raise DataError(f"dataset {name!r}: folder {folder} not found")
    return folder


def explicit_scale(options: LoaderOptions) -> LabelScale | None:
    """The ``label_scale`` option as a :class:`LabelScale` (None when unset)."""
    if options.label_scale is None:
        return None
    s = options.label_scale
    return LabelScale(
        float(s["minimum"]),
        float(s["maximum"]),
        float(s["threshold"]),
        float(s["relevant"]),
        str(s.get("name") or options.label_name or ""),  # "": the data's own label name
        rule="explicit",
    )


def load_dataset(
    name_or_path: str | Path,
    root: str | Path | None = None,
    options: LoaderOptions | Mapping[str, Any] | None = None,
) -> InteractionData:
    """Load a dataset by name (see the module docstring) or by path.

    Args:
        name_or_path: a name of :data:`DATASETS`, a dataset folder or an interactions file.
        root: folder holding the named datasets (default ``$FLEXREC_DATA_DIR``).
        options: loader options (:class:`~flexrec.data.options.LoaderOptions` or a mapping).

    Raises:
        ConfigError: a bad option, or a file option (``sep``, ``columns``, ``category_sep``) for
            a named dataset or folder.
        DataError: unknown name, missing folder or malformed files.

    Examples:
        >>> load_dataset("ml-latest-small").summary()
        'ml-latest-small: 100,836 interactions, 610 users, 9,742 items, 19 categories'
    """
    opts = loader_options(options)
    path = Path(str(name_or_path))
    if path.is_file() and str(name_or_path) not in DATASETS:
        return load_interactions(
            path,
            columns=opts.columns,
            sep=opts.sep,
            category_sep=opts.category_sep,
            scale=explicit_scale(opts),
            trend_window=opts.trend_window,
            labels=opts.labels,
            quantiles=opts.quantiles,
            label_name=opts.label_name,
        )
    if opts.file_options:
        key = next(iter(opts.file_options))
        raise ConfigError(
            f"loader.{key} applies to an interactions file, not to {str(name_or_path)!r} "
            "(a named dataset or folder is read in its own layout)"
        )
    data = _load_named(str(name_or_path), root)
    scale = explicit_scale(opts)
    if scale is not None or opts.labels != "auto" or opts.label_name is not None:
        data = with_labels(data, opts.labels, opts.quantiles, scale, opts.label_name)
    if opts.trend_window is not None:
        data = dataclasses.replace(data, trend_window=opts.trend_window)
    return data


def _load_named(name: str, root: str | Path | None) -> InteractionData:
    base = data_root(root)
    if name == "ml-latest-small":
        if base is not None and (base / name).is_dir():
            return load_movielens_latest(base / name)
        return load_movielens_latest(EMBEDDED_DIR / name)
    if name in ("ml-100k", "ml-1m"):
        return _load_folder(_need_root(name, base))
    if name in ("kuairec", "kuairec-big"):
        matrix = "small" if name == "kuairec" else "big"
        return load_kuairec(_need_root("kuairec", base), matrix=matrix, name=name)
    if name == "kuairec-sim":
        if base is not None and (base / name / "small_matrix.csv").is_file():
            return load_kuairec(base / name, name=name)
        from flexrec.data.simulator import simulate_kuairec

        return simulate_kuairec(_need_root("kuairec-side", base))
    path = Path(name)
    if path.is_dir():
        return _load_folder(path)
    raise DataError(
        f"unknown dataset {name!r}: not a file or folder; valid names: {', '.join(DATASETS)}"
    )
