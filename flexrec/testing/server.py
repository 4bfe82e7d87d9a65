"""Run ``flexrec serve`` in a child process and talk to it over real HTTP, for tests and benchmarks.

:func:`running_server` starts ``python -m flexrec.cli serve MODEL --port 0 ...``, waits for the line
announcing its address and yields the base URL; the process is stopped (SIGINT, then SIGKILL) on
exit. :func:`call` sends one request with the standard library's HTTP client and returns the status
and the decoded JSON body::

    with running_server("runs/quickstart/logs/version_0") as url:
        status, body = call(url, "POST", "/rank", {"candidates": [318, 858]})
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ServerError", "call", "running_server", "wait_for_url"]

_LISTENING = re.compile(r"listening on (http://\S+)")


class ServerError(RuntimeError):
    """The server process exited or did not announce its address in time."""


def wait_for_url(
    process: subprocess.Popen[str], timeout: float, pattern: re.Pattern[str] = _LISTENING
) -> tuple[str, list[str]]:
    """Read ``process.stdout`` until a line matches ``pattern``; its first group and the lines.

    Raises:
        ServerError: the process exited first, or ``timeout`` seconds passed.
    """
    assert process.stdout is not None
    lines: list[str] = []
    found: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            match = pattern.search(line)
            if match:
                found.append(match.group(1))
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not found:
        detail = "\n".join(lines[-20:])
        state = "exited" if process.poll() is not None else f"did not start within {timeout:.0f} s"
        raise ServerError(f"the server {state}:\n{detail}")
    return found[0], lines


def stop(process: subprocess.Popen[str], timeout: float = 20.0) -> None:
    """Interrupt ``process`` (as Ctrl-C does), then kill it if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running_server(
    model: str | Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 300.0,
    command: Sequence[str] | None = None,
) -> Iterator[str]:
    """Serve ``model`` on a free localhost port in a child process; yield its base URL.

    Args:
        model: checkpoint, run folder or export.
        *args: more ``flexrec serve`` options.
        env: the child's environment (default: this process's).
        cwd: the child's working directory.
        timeout: seconds to wait for the server to announce its address.
        command: the command line instead of ``python -m flexrec.cli serve MODEL --port 0 ...``
            (it must print ``listening on http://...``).
    """
    argv = (
        list(command)
        if command is not None
        else [
            sys.executable,
            "-m",
            "flexrec.cli",
            "serve",
            str(model),
            "--port",
            "0",
            *args,
        ]
    )
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
        cwd=cwd,
        env=dict(env) if env is not None else dict(os.environ),
    )
    try:
        url, _ = wait_for_url(process, timeout)
        yield url
    finally:
        stop(process)
        if process.stdout is not None:
            process.stdout.close()


def call(
    url: str,
    method: str,
    path: str,
    body: Any = None,
    raw: bytes | None = None,
    timeout: float = 120.0,
    connection: http.client.HTTPConnection | None = None,
) -> tuple[int, Any]:
    """One HTTP request; ``(status, JSON body)`` (the text when the body is not JSON).

    Args:
        url: the server's base URL.
        method: ``GET`` or ``POST``.
        path: e.g. ``/rank``.
        body: sent as JSON when not None.
        raw: sent as it is instead (e.g. malformed JSON).
        timeout: socket timeout in seconds.
        connection: a kept-alive connection to reuse (one per thread).
    """
    parts = urlsplit(url)
    own = connection is None
    conn = connection or http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port, timeout=timeout
    )
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"} if data is not None else {}
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        text = response.read().decode()
    finally:
        if own:
            conn.close()
    try:
        return response.status, json.loads(text)
    except json.JSONDecodeError:
        return response.status, text


def wait_until_ready(url: str, timeout: float = 30.0) -> None:
    """Poll ``GET /health`` until it answers 200."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if call(url, "GET", "/health", timeout=5)[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ServerError(f"{url}/health did not answer within {timeout:.0f} s")
        time.sleep(0.2)
