"""Every command of docs/getting-started.md, run as written, in order, in a fresh folder.

Shell blocks run line by line from a temporary folder holding a copy of ``configs/``:
``.venv/bin/flexrec`` is ``python -m flexrec.cli`` of this interpreter, ``.venv/bin/tensorboard``
``python -m tensorboard.main``, ``.venv/bin/python`` this interpreter, ``curl`` the real curl (or,
where none is installed, the same request sent with the standard library). Three things differ from
a reader's terminal, each for a reason:

- ``make bench`` / ``make test`` run as ``make -n`` (the targets exist and resolve): ``make test``
  is how CI runs this very test, and ``make bench`` is the 10-minute default grid.
- Commands that keep running (``flexrec serve``, ``tensorboard``) start in the background, on free
  ports instead of the page's 8000/8001/6006 (rewritten in the later ``curl`` lines), and stop at
  the end; TensorBoard is checked to list the run.
- Everything runs with ``OMP_NUM_THREADS=1``, as the page advises on a busy machine (CI shares its
  cores).

The ``text`` block after a command is compared with what it printed, line by line, numbers
excepted (training numbers vary with the CPU); a ``json`` block is compared by its keys, except a
one-line error, compared exactly. The python block runs as a script and must write the figure.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from flexrec.testing.server import stop, wait_for_url

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "getting-started.md"
FENCE = re.compile(r"^```(\w+)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


@dataclass(frozen=True)
class Block:
    lang: str
    body: str


def blocks() -> list[Block]:
    return [Block(m[1], m[2]) for m in FENCE.finditer(PAGE.read_text())]


def test_the_page_has_the_walkthrough() -> None:
    langs = [b.lang for b in blocks()]
    assert langs == [
        "bash",  # make bench / make test
        "bash",  # plugins
        "bash",  # fit
        "text",
        "bash",  # test
        "text",
        "bash",  # tensorboard
        "python",  # curves from metrics.csv
        "bash",  # serve
        "text",
        "bash",  # curl /model, /rank
        "json",
        "bash",  # a bad request
        "json",
        "bash",  # export, serve the export, query it
    ]
    assert (REPO / "docs" / "assets" / "quickstart-curves.png").is_file()


def _shape(line: str) -> str:
    return NUMBER.sub("#", " ".join(line.split()))


def _compare_text(expected: str, output: str) -> None:
    got = {_shape(line) for line in output.splitlines()}
    for line in expected.strip().splitlines():
        if line.strip():
            assert _shape(line) in got, (line, output[-3000:])


def _compare_json(expected: str, output: str) -> None:
    answer = json.loads(output)
    if "\n" not in expected.strip():  # a one-line answer: exactly
        assert answer == json.loads(expected)
        return
    # an abbreviated answer: its keys and the ranking's keys
    shown = json.loads(re.sub(r",\s*\.\.\.", "", expected))
    assert set(answer) == set(shown)
    assert set(answer["ranking"][0]) == set(shown["ranking"][0])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Walk:
    """Runs the page's commands in ``cwd``; long-running ones stay in the background."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        base = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
        self.env = {**base, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        self.addresses: dict[str, str] = {}  # the page's host:port -> the real one
        self.background: list[subprocess.Popen[str]] = []

    def argv(self, words: list[str]) -> list[str]:
        program, args = words[0], words[1:]
        if program == ".venv/bin/flexrec":
            return [sys.executable, "-m", "flexrec.cli", *args]
        if program == ".venv/bin/python":
            return [sys.executable, *args]
        if program == ".venv/bin/tensorboard":
            return [sys.executable, "-m", "tensorboard.main", *args]
        if program in ("curl", "make"):
            return words
        raise AssertionError(f"unexpected command on the page: {words}")

    def run(self, line: str) -> str:
        """Run one line; its output (stdout, or the server's announcement)."""
        words = shlex.split(line, comments=True)
        if words[0] == "make":
            proc = subprocess.run(
                ["make", "-n", *words[1:]], cwd=REPO, capture_output=True, text=True, check=False
            )
            assert proc.returncode == 0, (line, proc.stderr[-2000:])
            return proc.stdout
        if words[:2] == [".venv/bin/flexrec", "serve"]:
            return self.serve(words)
        if words[0] == ".venv/bin/tensorboard":
            return self.tensorboard(words)
        if words[0] == "curl":
            return self.curl(words)
        proc = subprocess.run(
            self.argv(words),
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert proc.returncode == 0, (line, proc.stdout[-2000:], proc.stderr[-3000:])
        return proc.stdout

    def start(self, argv: list[str]) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            argv, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE, text=True
        )
        self.background.append(process)
        return process

    def serve(self, words: list[str]) -> str:
        port = "8000"
        if "--port" in words:
            at = words.index("--port")
            port = words.pop(at + 1)
            words.pop(at)
        process = self.start(self.argv([*words, "--port", "0"]))
        url, lines = wait_for_url(process, timeout=300)
        self.addresses[f"127.0.0.1:{port}"] = url.removeprefix("http://")
        return "\n".join(lines).replace(url.removeprefix("http://"), f"127.0.0.1:{port}")

    def tensorboard(self, words: list[str]) -> str:
        port = str(_free_port())
        at = words.index("--port")
        words[at + 1] = port
        self.start(self.argv(words))
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=10) as r:
                    runs = json.loads(r.read())
                if "version_0" in runs:
                    return ""
            except OSError:
                pass
            assert time.monotonic() < deadline, "TensorBoard did not list the run"
            time.sleep(1)

    def curl(self, words: list[str]) -> str:
        for page, real in self.addresses.items():
            words = [w.replace(page, real) for w in words]
        if shutil.which("curl"):
            proc = subprocess.run(words, capture_output=True, text=True, timeout=300, check=False)
            assert proc.returncode == 0, (words, proc.stderr)
            return proc.stdout
        return _emulate_curl(words)

    def close(self) -> None:
        for process in self.background:
            stop(process)
            if process.stdout is not None:
                process.stdout.close()


def _emulate_curl(words: list[str]) -> str:
    """``curl -s [-X M] [-H 'K: V'] [-d BODY] URL`` with the standard library."""
    method, headers, data, url = "GET", {}, None, None
    args = iter(words[1:])
    for word in args:
        if word == "-X":
            method = next(args)
        elif word == "-H":
            key, _, value = next(args).partition(":")
            headers[key.strip()] = value.strip()
        elif word == "-d":
            data = next(args).encode()
            method = "POST" if method == "GET" else method
        elif word != "-s":
            url = word
    assert url is not None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as error:
        return str(error.read().decode())


@pytest.mark.slow
def test_getting_started_runs_as_written(tmp_path: Path) -> None:
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    walk = Walk(tmp_path)
    found = blocks()
    try:
        for index, block in enumerate(found):
            after = found[index + 1] if index + 1 < len(found) else None
            if block.lang == "bash":
                outputs = [walk.run(line) for line in block.body.strip().splitlines()]
                if after is not None and after.lang == "text":
                    _compare_text(after.body, outputs[-1])
                elif after is not None and after.lang == "json":
                    _compare_json(after.body, outputs[-1])
            elif block.lang == "python":
                script = tmp_path / "curves.py"
                script.write_text(block.body)
                walk.run(f".venv/bin/python {script}")
        run = tmp_path / "runs" / "quickstart" / "logs" / "version_0"
        assert (run / "curves.png").stat().st_size > 10_000
        assert (tmp_path / "quickstart.pt").is_file()
        assert (
            tmp_path / "runs" / "quickstart" / "logs" / "version_1" / "tasks_test.csv"
        ).is_file()
    finally:
        walk.close()
