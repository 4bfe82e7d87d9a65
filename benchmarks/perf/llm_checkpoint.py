"""Size and hook cost of an LLM policy's checkpoint state with and without the frozen weights.

Builds a ``FlexRecModule`` with SmolLM2-135M-Instruct + LoRA r 8, runs ``on_save_checkpoint``
(which leaves out :meth:`Policy.rebuilt_state_keys` and stores a fingerprint), serialises the
state both ways, then loads it into a fresh module through ``on_load_checkpoint`` (strict).

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/perf/llm_checkpoint.py``.
"""

from __future__ import annotations

import io
import time
from dataclasses import asdict

import torch

from flexrec.data.datamodule import FlexRecDataModule
from flexrec.module import FlexRecModule


def size_mb(obj: object) -> float:
    """Bytes of ``torch.save(obj)`` in MB."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.tell() / 1e6


def main() -> None:
    """Print the numbers."""
    info = asdict(FlexRecDataModule().info)
    policy = {"name": "llm", "args": {"model": "smollm2", "lora": {"r": 8}}}
    module = FlexRecModule(policy=policy, data_info=info)
    full = module.state_dict()
    checkpoint = {"state_dict": dict(full)}
    start = time.perf_counter()
    module.on_save_checkpoint(checkpoint)
    save_s = time.perf_counter() - start
    print(f"tensors kept: {len(checkpoint['state_dict'])} of {len(full)}")
    print(
        f"state size: {size_mb(checkpoint):.1f} MB (full state {size_mb({'state_dict': full}):.1f} MB)"
    )
    fresh = FlexRecModule(policy=policy, data_info=info)
    start = time.perf_counter()
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"])
    print(f"save hook {save_s:.2f} s, load hook + strict load {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
