"""Fault injection for reliability tests: crash a training run at an exact step."""

from __future__ import annotations

import os
import signal
from typing import Any

from lightning.pytorch.callbacks import Callback

__all__ = ["KillAtStep"]


class KillAtStep(Callback):
    """SIGKILL the training process once ``trainer.global_step`` reaches ``step``.

    Use it from a config or the command line to test resuming
    (``--trainer.callbacks+=flexrec.testing.faults.KillAtStep --trainer.callbacks.step=6``):
    unlike a timer-based kill it always crashes at the same point, after the same checkpoints.

    Args:
        step: the optimizer step after which the process kills itself.
    """

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        """Kill the process (no clean-up, like a power cut) at the chosen step."""
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)
