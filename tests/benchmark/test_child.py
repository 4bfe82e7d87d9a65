"""The grid's runs die with the grid runner (Linux), so a killed grid leaves none behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flexrec.benchmark.child import PARENT_ENV

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")

CHILD = (
    "from flexrec.benchmark.child import die_with_parent; die_with_parent(); "
    "import time; print('alive', flush=True); time.sleep(60)"
)


def _dead(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_a_child_is_killed_with_its_parent() -> None:
    parent_code = (
        "import subprocess, sys, time; "
        f"p = subprocess.Popen([sys.executable, '-c', {CHILD!r}], stdout=subprocess.DEVNULL); "
        "print(p.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    time.sleep(1.0)  # let the child make its request
    assert not _dead(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while not _dead(child) and time.time() < deadline:
        time.sleep(0.05)
    assert _dead(child)


def test_a_child_whose_parent_is_already_gone_exits() -> None:
    env = {**os.environ, PARENT_ENV: "1"}  # not our parent: the runner "died" before the request
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1 and "alive" not in proc.stdout
