"""``flexrec data download``: fetch an official dataset zip, verify it, extract it atomically.

The archive is streamed to a temporary file next to the destination, its checksum verified (the
``--sha256`` given, else the recorded SHA-256 and GroupLens's published MD5 of the official zip), extracted into a temporary
folder and moved into place with one ``os.replace``: an interrupted or failed download leaves nothing
behind.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path

from flexrec.errors import DataError

__all__ = ["DOWNLOADS", "download", "download_main"]

DOWNLOADS: dict[str, dict[str, str]] = {
    "ml-100k": {
        "url": "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        # MD5 as published by GroupLens (ml-100k.zip.md5); SHA-256 of the same 4,924,029-byte
        # archive as recorded by many independent projects (its u.data matches ../shared/data).
        "md5": "0e33842e24a9c977be4e0107933c0723",
        "sha256": "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
    },
}
_CHUNK = 1 << 20


def _fetch(url: str, target: Path, timeout: float) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, target.open("wb") as out:
            while chunk := response.read(_CHUNK):
                sha.update(chunk)
                md5.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"download of {url} failed: {reason}") from exc
    return sha.hexdigest(), md5.hexdigest()


def _extract(archive: Path, into: Path, name: str) -> Path:
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                if member.startswith("/") or ".." in Path(member).parts:
                    raise DataError(f"{archive.name}: unsafe path {member!r} in archive")
            zf.extractall(into)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{archive.name}: not a zip archive") from exc
    folder = into / name
    if not folder.is_dir():
        entries = [p for p in into.iterdir() if p.is_dir()]
        if len(entries) != 1:
            raise DataError(f"{archive.name}: expected one folder {name!r} in the archive")
        folder = entries[0]
    return folder


def download(
    name: str,
    dest: str | Path,
    url: str | None = None,
    sha256: str | None = None,
    force: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download dataset ``name`` into ``dest/<name>``.

    Args:
        name: a key of :data:`DOWNLOADS` (``ml-100k``).
        dest: the data root (the folder ``FLEXREC_DATA_DIR`` points to).
        url: override the official URL (mirrors, tests).
        sha256: expected SHA-256 of the zip; when None, the known SHA-256 and MD5 of the
            official zip are checked (a custom ``url`` requires ``sha256``).
        force: replace an existing ``dest/<name>``.
        timeout: network timeout in seconds.

    Returns:
        The dataset folder.

    Raises:
        DataError: unknown name, network failure, checksum mismatch or bad archive.
    """
    if name not in DOWNLOADS:
        raise DataError(f"unknown download {name!r}; valid: {', '.join(sorted(DOWNLOADS))}")
    spec = DOWNLOADS[name]
    dest = Path(dest)
    target = dest / name
    if target.exists() and not force:
        raise DataError(f"{target} already exists (use --force to replace it)")
    dest.mkdir(parents=True, exist_ok=True)
    if sha256 is None and url is not None:
        raise DataError(f"{name}: pass --sha256 to verify a download from a custom URL")
    source = url or spec["url"]
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=dest) as tmp:
        archive = Path(tmp) / f"{name}.zip"
        got_sha, got_md5 = _fetch(source, archive, timeout)
        if sha256 is not None and got_sha != sha256.lower():
            raise DataError(f"{name}: SHA-256 mismatch (expected {sha256}, got {got_sha})")
        if sha256 is None and (got_sha, got_md5) != (spec["sha256"], spec["md5"]):
            raise DataError(f"{name}: SHA-256 mismatch (expected {spec['sha256']}, got {got_sha})")
        folder = _extract(archive, Path(tmp) / "x", name)
        if target.exists():
            shutil.rmtree(target)
        os.replace(folder, target)
    return target


def download_main(argv: Sequence[str] | None = None) -> int:
    """``flexrec data download NAME [--dest DIR] [--url URL] [--sha256 HEX] [--force]``.

    Returns:
        0 on success.

    Raises:
        DataError: bad name, unreachable URL or checksum mismatch (the ``flexrec`` command
            prints it as one line and exits 2).
    """
    parser = argparse.ArgumentParser(prog="flexrec data download", description=__doc__)
    parser.add_argument("name", help=f"dataset ({', '.join(sorted(DOWNLOADS))})")
    parser.add_argument(
        "--dest", default=None, help="data root (default $FLEXREC_DATA_DIR or ./data)"
    )
    parser.add_argument("--url", default=None, help="download from this URL instead")
    parser.add_argument("--sha256", default=None, help="expected SHA-256 of the zip")
    parser.add_argument("--force", action="store_true", help="replace an existing copy")
    args = parser.parse_args(argv)
    dest = args.dest or os.environ.get("FLEXREC_DATA_DIR") or "data"
    path = download(args.name, dest, url=args.url, sha256=args.sha256, force=args.force)
    print(f"{args.name} ready in {path}")
    return 0
