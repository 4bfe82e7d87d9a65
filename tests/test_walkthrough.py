"""Every code block of docs/plugins/writing.md, run as written.

Files (fenced blocks with ``title="..."``) are written to ``tmp_path``; shell blocks are run from
there, in order, with ``flexrec`` as ``python -m flexrec.cli`` and ``pytest`` as
``python -m pytest`` of this interpreter, and the ``text`` block after a shell block is checked
against what its last command printed (runs of spaces are compared as one; a trailing ``...``
matches anything). ``pip install -e DIR`` is run as a real pip build of the documented
``pyproject.toml`` (``--no-deps --no-build-isolation``), but into a ``--target`` folder on
``PYTHONPATH`` instead of the shared virtual environment, so the installed distribution (entry
point included) is visible to the later commands and to nothing else.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WALKTHROUGH = REPO / "docs" / "plugins" / "writing.md"
FENCE = re.compile(r"^```(\w+)(?:[ \t]+title=\"([^\"]+)\")?[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    lang: str
    title: str | None
    body: str


def blocks(path: Path = WALKTHROUGH) -> list[Block]:
    """The fenced code blocks of a markdown file, in order."""
    return [Block(m[1], m[2], m[3]) for m in FENCE.finditer(path.read_text())]


def test_blocks_are_parsed() -> None:
    found = blocks()
    files = [b.title for b in found if b.title]
    assert files == [
        "flexrec-swapsign/src/flexrec_swapsign/__init__.py",
        "flexrec-swapsign/pyproject.toml",
        "flexrec-swapsign/tests/test_swap_sign.py",
        "swap_sign.yaml",
    ]
    assert [b.lang for b in found if not b.title] == ["text"] + ["bash", "text"] * 4


def _squash(text: str) -> str:
    return " ".join(text.split())


def _expect(expected: str, output: str) -> None:
    for line in expected.strip().splitlines():
        want = _squash(line)
        if want.endswith("..."):
            assert want[:-3] in _squash(output), (want, output[-3000:])
        else:
            assert want in [_squash(o) for o in output.splitlines()], (want, output[-3000:])


class Shell:
    """Runs the walkthrough's shell lines in ``cwd`` with the plug-in's ``--target`` on the path."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.site = cwd / ".site"
        base = {k: v for k, v in os.environ.items() if not k.startswith("FLEXREC_")}
        path = os.pathsep.join(filter(None, [str(self.site), base.get("PYTHONPATH")]))
        self.env = {**base, "PYTHONPATH": path, "PYTHONWARNINGS": "ignore"}

    def run(self, line: str) -> subprocess.CompletedProcess[str]:
        words = shlex.split(line)
        env = dict(self.env)
        while "=" in words[0]:
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        command, args = words[0], words[1:]
        if command == "pip":
            assert args[:2] == ["install", "-e"], line
            argv = ["-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
            argv += ["--target", str(self.site), *args[2:]]
        elif command == "pytest":
            argv = ["-m", "pytest", "-p", "no:cacheprovider", *args]
        elif command == "flexrec":
            argv = ["-m", "flexrec.cli", *args]
        else:
            raise AssertionError(f"unexpected command in the walkthrough: {line}")
        return subprocess.run(
            [sys.executable, *argv],
            cwd=self.cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    def script(self, block: Block) -> subprocess.CompletedProcess[str]:
        """Run every line of a shell block (each must succeed); the last result."""
        assert block.lang == "bash"
        proc = None
        for line in block.body.strip().splitlines():
            proc = self.run(line)
            assert proc.returncode == 0, (line, proc.stdout[-2000:], proc.stderr[-3000:])
        assert proc is not None
        return proc


@pytest.mark.slow
def test_walkthrough_runs_as_written(tmp_path: Path) -> None:
    found = blocks()
    for block in found:
        if block.title:
            target = tmp_path / block.title
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.body)
    # the commands name the synthetic config of the flexrec repository by its relative path
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    shell = Shell(tmp_path)
    layout, *plain = [b for b in found if not b.title]  # the first one is the layout tree
    for title in ("pyproject.toml", "src/flexrec_swapsign/__init__.py", "tests/test_swap_sign.py"):
        assert title in layout.body
    install, listing, fit, recorded, disable, disabled, refit, refused = plain

    # 3. install, run the plug-in's tests (contract suite + hand values), list
    proc = shell.run(install.body.strip().splitlines()[0])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (shell.site / "flexrec_swapsign-0.1.0.dist-info" / "entry_points.txt").read_text()
    tests = shell.run(install.body.strip().splitlines()[1])
    assert tests.returncode == 0, tests.stdout[-3000:]
    assert re.search(r"\b7 passed\b", tests.stdout), tests.stdout[-2000:]  # 6 contract + 1
    listed = shell.run(install.body.strip().splitlines()[2])
    assert listed.returncode == 0, listed.stderr[-3000:]
    _expect(listing.body, listed.stdout)

    # 4. train with it: the run record names the plug-in
    shell.script(fit)
    record = json.loads((tmp_path / "runs/swap_sign/logs/version_0/run.json").read_text())
    assert record["config"]["model"]["reward"] == {"name": "swap_sign", "args": {"cutoff": 5}}
    assert record["config"]["model"]["estimator"] == "rloo"
    assert record["config"]["trainer"]["max_epochs"] == 1
    assert recorded.body.strip() in record["plugins"]
    loss = record["metrics"]["fit"]["train/loss"]
    assert loss == loss  # not NaN

    # 5. disable it
    _expect(disabled.body, shell.script(disable).stdout)
    assert "swap_sign" not in shell.run(disable.body.strip()).stdout
    (line,) = refit.body.strip().splitlines()
    proc = shell.run(line)
    assert proc.returncode == 2, proc.stderr[-3000:]
    _expect(refused.body, proc.stderr)
