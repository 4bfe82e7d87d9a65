"""``flexrec export``: a trained model in a form that outlives the run folder.

- **LLM policies** (``llm``): a folder that transformers + peft load without flexrec. Under LoRA it
  is a standard PEFT adapter folder (``adapter_config.json``, ``adapter_model.safetensors``); after
  full fine-tuning (``lora: null``) a standard model folder (``config.json``,
  ``model.safetensors``). Either way the tokenizer is saved with it (chat template included), and
  ``flexrec_export.json`` records the prompt format (system prompt, user message, history and
  candidate lines, answer prefix, the candidate identifiers and their token ids), the needs with
  their instructions, and the settings flexrec needs to serve it; ``catalogue.pt`` holds the item
  catalogue for ``flexrec serve`` and ``README.md`` the recipe to score a ranking with plain
  transformers + peft (the same per-item log-probabilities as flexrec's, see
  ``docs/serving.md``).
- **The native policy** (and any other registered policy built from its registry spec): one file
  (``torch.save`` of plain containers and tensors: the policy's spec and weights, the data facts,
  the needs and the item catalogue) that ``flexrec serve`` loads with ``torch.load(weights_only=True)``,
  without the run folder or the dataset.

Exports are written to a temporary sibling and renamed into place, so a failed export leaves
nothing; an existing output is replaced only with ``--force``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from flexrec.errors import ConfigError, OutputError
from flexrec.policies.llm import LLMPolicy
from flexrec.policies.prompt import EMPTY_HISTORY, HISTORY_LINE, USER_MESSAGE
from flexrec.serving.model import (
    CATALOGUE_FILE,
    EXPORT_VERSION,
    LLM_FORMAT,
    LLM_MANIFEST,
    NATIVE_FORMAT,
    ServedModel,
    load_served_model,
)

__all__ = ["export_main", "export_model", "llm_manifest"]

DEFAULT_EXPORT_CANDIDATES = 50
"""How many candidates an LLM export's identifier list covers by default."""


def _version() -> str | None:
    try:
        return metadata.version("flexrec")
    except metadata.PackageNotFoundError:
        return None


def llm_manifest(model: ServedModel, max_candidates: int) -> dict[str, Any]:
    """The ``flexrec_export.json`` of an LLM policy (see the module docstring)."""
    policy = model.policy
    assert isinstance(policy, LLMPolicy)
    try:
        identifiers, paths = policy.identifier_paths(max_candidates)
    except ValueError as exc:
        raise ConfigError(
            f"--max-candidates {max_candidates}: the policy cannot label that many candidates "
            f"({' '.join(str(exc).split())[:200]})"
        ) from exc
    by_k = {
        str(k): policy.identifier_paths(k)[0]
        for k in range(1, max_candidates + 1)
        if policy.identifier_paths(k)[0] != identifiers[:k]
    }
    base = policy.causal_lm()
    return {
        "format": LLM_FORMAT,
        "version": EXPORT_VERSION,
        "flexrec_version": _version(),
        "weights": "lora_adapter" if policy.use_lora else "full_model",
        "base_model": str(getattr(base.config, "_name_or_path", "")) if policy.use_lora else None,
        "dtype": str(next(base.parameters()).dtype).removeprefix("torch."),
        "prompt": {
            "system_prompt": policy.system_prompt,
            "user_message": USER_MESSAGE,
            "history_line": HISTORY_LINE,
            "empty_history": EMPTY_HISTORY,
            "candidate_line": policy.candidate_template,
            "answer_prefix": policy.answer_prefix,
            "max_prompt_tokens": policy.max_prompt_tokens,
            "identifiers": identifiers,
            "identifier_tokens": paths,
            "identifiers_by_count": by_k,
            "reasoning_tokens": policy.reasoning_tokens,
            "reasoning_prefix": policy.reasoning_prefix,
        },
        "needs": [
            {
                "name": need.name,
                "instruction": need.instructions[0],
                "paraphrases": list(need.instructions),
            }
            for need in model.needs
        ],
        "settings": model.settings(),
    }


_README = """# flexrec LLM export

Exported by flexrec {version} from `{source}` ({weights}). Load it without flexrec:

```python
import json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
{peft_import}
folder = "{folder_name}"
manifest = json.load(open(f"{{folder}}/flexrec_export.json"))
tokenizer = AutoTokenizer.from_pretrained(folder)
{load_model}
model.eval()
```

A prompt (`manifest["prompt"]`): the chat messages `[system_prompt (if not null), user]`, where the
user message is `user_message` filled with the need's `instruction`, the history block (one
`history_line` per history item, oldest first, or `empty_history`), the candidate block (one
`candidate_line` per candidate, with `label` = the stripped identifier and `identifier` = the
identifier itself) and `count` = the number of candidates K; the first K `identifiers` label the
candidates in prompt order (`identifiers_by_count[K]` when listed). The prompt text is
`tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)` followed by
`answer_prefix`, encoded without special tokens; while it is longer than `max_prompt_tokens`, the
oldest history line is dropped.

A ranking is written as the identifiers' tokens one after another. The probability of placing
candidate c at step k, given the candidates placed before it, is the softmax of the next-token
logits over the identifier tokens of the candidates not placed yet (constrained decoding). The
ranking flexrec serves is the greedy one (the most probable candidate at each step).
"""


def _readme(model: ServedModel, manifest: Mapping[str, Any], folder_name: str) -> str:
    lora = manifest["weights"] == "lora_adapter"
    return _README.format(
        version=manifest["flexrec_version"],
        source=model.source,
        weights="a LoRA adapter" if lora else "a fully fine-tuned model",
        folder_name=folder_name,
        peft_import="from peft import PeftModel" if lora else "",
        load_model=(
            'base = AutoModelForCausalLM.from_pretrained(manifest["base_model"])\n'
            "model = PeftModel.from_pretrained(base, folder)"
            if lora
            else "model = AutoModelForCausalLM.from_pretrained(folder)"
        ),
    )


def _write_llm(model: ServedModel, tmp: Path, out: Path, max_candidates: int) -> None:
    policy = model.policy
    assert isinstance(policy, LLMPolicy)
    manifest = llm_manifest(model, max_candidates)
    policy.model.save_pretrained(str(tmp))  # the adapter under LoRA, the whole model otherwise
    policy.tokenizer.save_pretrained(tmp)
    (tmp / LLM_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    torch.save(model.catalogue.to_payload(), tmp / CATALOGUE_FILE)
    (tmp / "README.md").write_text(_readme(model, manifest, out.name))
    for path in tmp.iterdir():  # some writers leave their files private (0600)
        path.chmod(0o644)


def _write_native(model: ServedModel, path: Path) -> None:
    payload = {
        "format": NATIVE_FORMAT,
        "version": EXPORT_VERSION,
        "flexrec_version": _version(),
        "source": model.source,
        "settings": model.settings(),
        "state_dict": {k: v.detach().cpu() for k, v in model.policy.state_dict().items()},
        "catalogue": model.catalogue.to_payload(),
    }
    with path.open("wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _place(tmp: Path, out: Path, force: bool) -> None:
    """Move ``tmp`` to ``out``, replacing an existing ``out`` (``force``)."""
    old = None
    if out.exists() or out.is_symlink():
        old = out.with_name(f".{out.name}.{os.getpid()}.old")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def export_model(
    model: ServedModel,
    out: str | Path,
    force: bool = False,
    max_candidates: int = DEFAULT_EXPORT_CANDIDATES,
) -> Path:
    """Write the export of ``model`` to ``out`` (a folder for LLM policies, else one file).

    Raises:
        ConfigError: ``out`` exists and ``force`` is not set.
        OutputError: ``out`` cannot be written.
    """
    target = Path(out)
    if (target.exists() or target.is_symlink()) and not force:
        raise ConfigError(f"{target} exists: choose another --out or pass --force to replace it")
    llm = isinstance(model.policy, LLMPolicy)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if llm:
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        else:
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from exc
    try:
        if llm:
            tmp.chmod(0o755)
            _write_llm(model, tmp, target, max_candidates)
        else:
            _write_native(model, tmp)
        _place(tmp, target, force)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink(missing_ok=True)
    return target


def build_parser() -> argparse.ArgumentParser:
    """The arguments of ``flexrec export``."""
    parser = argparse.ArgumentParser(
        prog="flexrec export",
        description="Export a trained model: LLM policies as a PEFT adapter (or full model) "
        "folder with its tokenizer, prompt format and need instructions, loadable by "
        "transformers + peft without flexrec; other policies (native) as one file that "
        "`flexrec serve` loads without the run or the dataset.",
    )
    parser.add_argument("model", metavar="MODEL", help="checkpoint (.ckpt) or run folder")
    parser.add_argument("--out", required=True, help="the export to write (a folder for LLMs)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument(
        "--max-candidates",
        type=int,
        default=DEFAULT_EXPORT_CANDIDATES,
        help=f"LLM exports list identifiers for up to this many candidates "
        f"({DEFAULT_EXPORT_CANDIDATES})",
    )
    return parser


def export_main(argv: Sequence[str]) -> int:
    """``flexrec export MODEL --out PATH [--force]``."""
    args = build_parser().parse_args(list(argv))
    if args.max_candidates < 1:
        raise ConfigError(f"--max-candidates must be >= 1, got {args.max_candidates}")
    out = Path(args.out)
    if (out.exists() or out.is_symlink()) and not args.force:
        raise ConfigError(f"{out} exists: choose another --out or pass --force to replace it")
    model = load_served_model(args.model)
    path = export_model(model, out, force=args.force, max_candidates=args.max_candidates)
    kind = "folder" if path.is_dir() else "file"
    print(f"flexrec export: {model.kind} policy from {model.source} -> {path} ({kind})")
    return 0
