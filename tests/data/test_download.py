"""``download`` against a local HTTP server serving a zip built from ../shared/data/ml-100k."""

from __future__ import annotations

import functools
import hashlib
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flexrec.cli import main
from flexrec.data.download import download, download_main
from flexrec.data.movielens import load_movielens_100k
from flexrec.errors import DataError


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served_zip(ml100k_dir: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    www = tmp_path / "www"
    www.mkdir()
    archive = www / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(ml100k_dir.iterdir()):
            zf.write(file, f"ml-100k/{file.name}")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    handler = functools.partial(_Quiet, directory=str(www))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/ml-100k.zip", sha
    finally:
        server.shutdown()
        server.server_close()


def test_download_verifies_and_extracts(served_zip: tuple[str, str], tmp_path: Path) -> None:
    url, sha = served_zip
    folder = download("ml-100k", tmp_path / "data", url=url, sha256=sha)
    assert folder == tmp_path / "data" / "ml-100k"
    assert load_movielens_100k(folder).num_interactions == 100_000
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["ml-100k"]
    with pytest.raises(DataError, match="already exists"):
        download("ml-100k", tmp_path / "data", url=url, sha256=sha)


def test_bad_checksum_leaves_nothing(served_zip: tuple[str, str], tmp_path: Path) -> None:
    url, _ = served_zip
    with pytest.raises(DataError, match="SHA-256 mismatch"):
        download("ml-100k", tmp_path / "data", url=url, sha256="0" * 64)
    assert list((tmp_path / "data").iterdir()) == []


def test_download_main_exit_codes(
    served_zip: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, sha = served_zip
    dest = str(tmp_path / "d")
    assert download_main(["ml-100k", "--dest", dest, "--url", url, "--sha256", sha]) == 0
    download_args = ["data", "download", "ml-100k", "--dest", dest, "--url", url + "x", "--force"]
    assert main(download_args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flexrec: error: ")
    assert main(["data", "download", "nope", "--dest", dest]) == 2
    assert (tmp_path / "d" / "ml-100k" / "u.data").is_file()


def test_official_checksum_is_checked_without_sha256(
    served_zip: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flexrec.data import download as module

    url, _ = served_zip
    monkeypatch.setitem(module.DOWNLOADS, "ml-100k", {**module.DOWNLOADS["ml-100k"], "url": url})
    with pytest.raises(
        DataError, match="SHA-256 mismatch"
    ):  # our rebuilt zip is not the official one
        download("ml-100k", tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []
    with pytest.raises(DataError, match="pass --sha256"):
        download("ml-100k", tmp_path / "data", url=url)
    assert module.DOWNLOADS["ml-100k"]["sha256"].startswith("50d2a982")
