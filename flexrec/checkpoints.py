"""Checkpoint files: written atomically, read with one-line errors, checked against the settings.

- :class:`AtomicCheckpointIO` writes each checkpoint to a temporary file next to it and renames it
  into place, so a full disk or a killed process never leaves a truncated ``.ckpt``; a refused
  write is an :class:`~flexrec.errors.OutputError` naming the file. ``flexrec`` uses it unless the
  trainer is given another ``CheckpointIO`` plug-in.
- :func:`read_checkpoint` reads one, turning a missing, truncated or foreign file into a one-line
  :class:`~flexrec.errors.ConfigError`.
- :func:`setting_conflicts` and :func:`data_info_conflicts` list the settings in which a checkpoint
  and the current run differ in a way that changes the model's shape or the meaning of its inputs
  (:data:`DATA_SHAPE_KEYS`, :data:`DATA_INFO_KEYS`, the policy spec); :func:`check_data_info`
  refuses a checkpoint of other data wherever it is loaded (``FlexRecModule.on_load_checkpoint``).
- :func:`fingerprint` checksums the frozen tensors a checkpoint leaves out, so that the model they
  are rebuilt from can be checked when it is loaded.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import Tensor

from flexrec.errors import ConfigError, OutputError

__all__ = [
    "DATA_INFO_KEYS",
    "DATA_SHAPE_KEYS",
    "AtomicCheckpointIO",
    "check_data_info",
    "data_info_conflicts",
    "fingerprint",
    "is_checkpoint_file_path",
    "read_checkpoint",
    "setting_conflicts",
]

DATA_SHAPE_KEYS = ("dataset", "needs", "eval_needs", "num_items")
"""Data module settings a checkpoint must share with the run that loads it: the dataset fixes the
item vocabulary (an item id means another item in another dataset, and the policy's item table
has one row per item) and the needs fix the need vocabulary (the policy's need embedding and the
order of the need indices). Other data settings (batch sizes, candidates, history length, task
limits) change what is evaluated, not what the weights mean, so they may differ."""

DATA_INFO_KEYS = ("num_items", "num_features", "needs")
"""The facts of :class:`~flexrec.types.DataInfo` that the policy is built from (table sizes,
feature count, need vocabulary); the model's weights only fit data with the same facts."""

_LIGHTNING_NAMES = ("best", "last", "hpc")


def is_checkpoint_file_path(ckpt_path: str | os.PathLike[str]) -> bool:
    """Whether ``ckpt_path`` names a file (not Lightning's ``best``, ``last``, ``hpc`` or
    ``registry...``, nor a remote URL)."""
    text = str(ckpt_path)
    return text not in _LIGHTNING_NAMES and not text.startswith("registry") and "://" not in text


def read_checkpoint(
    path: str | os.PathLike[str], what: str = "ckpt_path", weights_only: bool | None = None
) -> dict[str, Any]:
    """Load a Lightning checkpoint on the CPU.

    Raises:
        ConfigError: no file at ``path``, or not a readable Lightning checkpoint (truncated,
            random bytes, another kind of file); the message names ``what`` and ``path``.
    """
    if not Path(path).is_file():
        raise ConfigError(f"{what} {str(path)!r}: no checkpoint file there")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # torch raises anything from EOFError to UnpicklingError
        detail = " ".join(str(exc).split()).split(". ")[0][:200] or type(exc).__name__
        raise ConfigError(f"{what} {str(path)!r}: not a readable checkpoint ({detail})") from exc
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"{what} {str(path)!r}: not a Lightning checkpoint (no state_dict)")
    return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes through a temporary file in the checkpoint's folder and
    reports unreadable checkpoints and refused writes in one line (see the module docstring)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` atomically (local paths; others as Lightning does).

        Raises:
            OutputError: the folder cannot be created or the file written (disk full, read-only).
        """
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # serialise first: a write error is then a plain OSError
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as handle:
                handle.write(buffer.getbuffer())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise OutputError(
                f"cannot write checkpoint {target}: {exc.strerror or exc}"
                + (f" ({exc.filename})" if exc.filename and str(exc.filename) != str(tmp) else "")
            ) from exc

    def load_checkpoint(
        self,
        path: Any,
        map_location: Callable[..., Any] | None = None,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Load a checkpoint (see :func:`read_checkpoint`)."""
        if "://" in str(path):
            return super().load_checkpoint(path, map_location, weights_only)
        return read_checkpoint(path, "checkpoint", weights_only)


def _plain(value: Any) -> Any:
    """Containers as plain dicts and lists (tuples, jsonargparse namespaces), for comparing."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _spec(value: Any) -> tuple[Any, dict[str, Any]]:
    """``(name, args)`` of a component spec (``"native"`` or ``{name, args}``)."""
    value = _plain(value)
    if isinstance(value, dict):
        return value.get("name"), dict(value.get("args") or {})
    return value, {}


def _difference(prefix: str, saved: Any, current: Any) -> str:
    return f"{prefix}: {saved!r} in the checkpoint, {current!r} here"


def setting_conflicts(
    checkpoint: Mapping[str, Any],
    policy: Any,
    default_policy: Any,
    data: Mapping[str, Any] | None,
) -> list[str]:
    """The settings in which a run contradicts the checkpoint it loads, one phrase each.

    Args:
        checkpoint: the loaded checkpoint (its ``hyper_parameters`` and
            ``datamodule_hyper_parameters``).
        policy: the run's ``model.policy`` spec.
        default_policy: the spec a run gets when it does not set one: Lightning then takes the
            checkpoint's, so only an explicit spec can contradict it.
        data: the run's data module arguments (``data.init_args``), or None.

    Returns:
        e.g. ``["model.policy.args.dim: 32 in the checkpoint, 16 here"]``: a policy spec set
        explicitly to another name or other arguments, and the :data:`DATA_SHAPE_KEYS` both data
        modules have, with different values.
    """
    conflicts: list[str] = []
    hparams = checkpoint.get("hyper_parameters") or {}
    if "policy" in hparams and _spec(policy) not in (
        _spec(default_policy),
        _spec(hparams["policy"]),
    ):
        (saved_name, saved_args), (name, args) = _spec(hparams["policy"]), _spec(policy)
        if saved_name != name:
            conflicts.append(_difference("model.policy", saved_name, name))
        else:
            for key in sorted(set(saved_args) | set(args)):
                if saved_args.get(key) != args.get(key):
                    conflicts.append(
                        _difference(f"model.policy.args.{key}", saved_args.get(key), args.get(key))
                    )
    saved_data = _plain(checkpoint.get("datamodule_hyper_parameters") or {})
    current = _plain(data or {})
    for key in DATA_SHAPE_KEYS:
        if key in saved_data and key in current and saved_data[key] != current[key]:
            conflicts.append(_difference(f"data.{key}", saved_data[key], current[key]))
    return conflicts


def data_info_conflicts(saved: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[str]:
    """The :data:`DATA_INFO_KEYS` in which a checkpoint's data facts and the run's differ."""
    saved_plain, current_plain = _plain(saved or {}), _plain(current)
    return [
        _difference(f"data {key}", saved_plain[key], current_plain[key])
        for key in DATA_INFO_KEYS
        if key in saved_plain and key in current_plain and saved_plain[key] != current_plain[key]
    ]


def check_data_info(checkpoint: Mapping[str, Any], current: Mapping[str, Any] | None) -> None:
    """Refuse a checkpoint whose saved ``data_info`` differs from the run's (``current``; nothing
    to compare when either is missing).

    Raises:
        ConfigError: naming the differing :data:`DATA_INFO_KEYS`.
    """
    saved = (checkpoint.get("hyper_parameters") or {}).get("data_info")
    conflicts = data_info_conflicts(saved, current) if saved and current else []
    if conflicts:
        raise ConfigError(f"the checkpoint is of other data: {'; '.join(conflicts)}")


def fingerprint(state: dict[str, Tensor], keys: list[str]) -> float:
    """A cheap order-dependent checksum of some tensors (float64 sums, weighted by position)."""
    total = 0.0
    for i, key in enumerate(sorted(keys)):
        t = state[key].detach().double()
        total += (i + 1) * (t.sum().item() + 0.5 * t.abs().sum().item())
    return total
