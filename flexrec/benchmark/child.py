"""``python -m flexrec.benchmark.child ARGS``: ``flexrec ARGS`` as a run that dies with its grid.

The grid runner starts every command of a run this way. When ``flexrec-bench`` is killed, even by
SIGKILL (which it cannot catch), its runs must stop too: a run left behind would keep training and
writing into the run directory that a rerun deletes and starts afresh. On Linux the child asks the
kernel to SIGKILL it when its parent dies (``prctl(PR_SET_PDEATHSIG)``); elsewhere it is a plain
``flexrec`` command.
"""

from __future__ import annotations

import os
import signal
import sys

from flexrec.cli import main

__all__ = ["PARENT_ENV", "die_with_parent"]

PARENT_ENV = "FLEXREC_BENCH_PARENT"
"""Environment variable with the pid of the grid runner that started this process."""

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Have this process killed when its parent process dies (Linux; a no-op elsewhere).

    A parent that died before the request was made is noticed too: the process then exits at once.
    The parent's pid is taken from :data:`PARENT_ENV` (removed from the environment, so processes
    this one starts, e.g. DDP ranks, compare with their own parent) or else read now.
    """
    expected = os.environ.pop(PARENT_ENV, None)
    parent = int(expected) if expected else os.getppid()
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


if __name__ == "__main__":  # pragma: no cover
    die_with_parent()
    sys.exit(main())
