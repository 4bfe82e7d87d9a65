"""The LLM RL recipe on one GPU: rollouts/s, s/step and peak GPU memory (issue 15).

Trains with FlexRec RL exactly as ``configs/smollm2.yaml`` (read from that file: SmolLM2-135M-Instruct
+ LoRA r 8, label-last candidate lines, compact text, K = 20, a history of 10, G = 8 rollouts,
4 tasks per step, one prompt per forward pass and one backward per task, no KL term, lr 3e-4)
through the real Lightning loop (``FlexRecModule`` + ``FlexRecDataModule``), once per precision
(``32-true`` and ``bf16-mixed`` by default), on real ML-100K prompts when ``$FLEXREC_DATA_DIR``
holds ``ml-100k``, else on the embedded ml-latest-small. The first ``--warmup`` steps of each run
(CUDA context, kernel selection, allocator growth) are not timed. Validation is off.

Prints one JSON line per precision and a summary table:

- ``s_per_step``: wall time of one training step (sampling the 4 x 8 rollouts, rewards and
  advantages, the training pass and AdamW), the CUDA queue synchronised at both ends;
- ``rollouts_per_s``: rollouts sampled per second of sampling (``policy.sample`` alone, timed the
  same way), ``tasks_per_hour``: training tasks per hour;
- ``peak_gpu_gb``: ``torch.cuda.max_memory_allocated`` over the run (``peak_reserved_gb``: what
  the caching allocator held); on ``--device cpu`` the process's peak RSS instead.

The whole run stays within ``--budget-s`` (default 420 s, shared by the precisions; each run stops
early once its share is spent, after at least one timed step) plus the model loading, so it fits
in 8 minutes. SmolLM2 and the tiny test model load from installed packages; nothing is read from
a network (``HF_HUB_OFFLINE=1``). The recipe's ``trainer.deterministic: true`` is not applied: this
measures speed, and deterministic CUDA kernels are slower (``--deterministic`` turns it on).

Run on a machine with a CUDA GPU (``make setup`` done):
``FLEXREC_DATA_DIR=../shared/data HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/perf/llm_gpu.py``.
Without CUDA it exits at once with a one-line message (status 1). Smoke run of the script itself
on a CPU: ``--device cpu --model tiny --steps 2 --warmup 1``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "configs" / "smollm2.yaml"
NO_CUDA = (
    "llm_gpu.py: no CUDA device here (torch.cuda.is_available() is False), nothing measured; "
    "run it on a GPU machine, or pass --device cpu for a smoke run"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument(
        "--model",
        default="smollm2",
        help="smollm2 (default), tiny (the offline test model), or a folder",
    )
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument("--dtype", default="float32", help="base weights' dtype (LLMPolicy dtype)")
    parser.add_argument(
        "--dataset", default=None, help="default: ml-100k if found, else ml-latest-small"
    )
    parser.add_argument("--steps", type=int, default=30, help="timed steps per precision (at most)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps per precision")
    parser.add_argument("--budget-s", type=float, default=420.0, help="training time, all runs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--deterministic", action="store_true")
    return parser.parse_args(argv)


def default_dataset() -> str:
    """``ml-100k`` when ``$FLEXREC_DATA_DIR`` holds it, else the embedded ``ml-latest-small``."""
    root = os.environ.get("FLEXREC_DATA_DIR", "").strip()
    return "ml-100k" if root and (Path(root) / "ml-100k").is_dir() else "ml-latest-small"


def model_path(name: str) -> str:
    """The ``model`` argument of the LLM policy for ``--model``."""
    if name != "tiny":
        return name
    from flexrec.testing.tiny_llm import build_tiny_llm

    return str(build_tiny_llm(Path(tempfile.gettempdir()) / "flexrec-tiny-llm"))


def recipe() -> dict[str, Any]:
    """``configs/smollm2.yaml`` as a dict."""
    import yaml

    return dict(yaml.safe_load(RECIPE.read_text()))


def sync(device: str) -> None:
    """Wait for the CUDA queue, so wall times cover the GPU work."""
    if device == "cuda":
        torch.cuda.synchronize()


def run(precision: str, budget_s: float, args: argparse.Namespace) -> dict[str, Any]:
    """Train one precision for ``warmup + steps`` steps, or until ``budget_s`` is spent."""
    import lightning as L

    from flexrec.data.datamodule import FlexRecDataModule
    from flexrec.module import FlexRecModule

    config = recipe()
    L.seed_everything(int(config.get("seed_everything", 0)), verbose=False)
    data_args = {**config["data"]["init_args"], "dataset": args.dataset or default_dataset()}
    data = FlexRecDataModule(**data_args)
    model_args = dict(config["model"])
    policy = dict(model_args.pop("policy"))
    policy["args"] = {**policy["args"], "model": model_path(args.model), "dtype": args.dtype}
    module = FlexRecModule(policy=policy, **model_args)
    device = args.device
    steps: list[float] = []
    sampling = {"seconds": 0.0, "rollouts": 0}
    start = time.perf_counter()

    class Clock(L.Callback):
        def on_train_batch_start(self, *_: Any) -> None:
            sync(device)
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer: L.Trainer, *_: Any) -> None:
            sync(device)
            steps.append(time.perf_counter() - self.t0)
            timed = len(steps) - args.warmup
            if timed >= 1 and time.perf_counter() - start > budget_s:
                trainer.should_stop = True

    class TimeSampling(L.Callback):
        def on_fit_start(self, trainer: L.Trainer, pl_module: Any) -> None:
            policy = pl_module.policy
            sample = policy.sample

            def timed_sample(batch: Any, group_size: int, temperature: float = 1.0) -> Any:
                sync(device)
                t0 = time.perf_counter()
                out = sample(batch, group_size, temperature)
                sync(device)
                if len(steps) >= args.warmup:
                    sampling["seconds"] += time.perf_counter() - t0
                    sampling["rollouts"] += batch.batch_size * group_size
                return out

            policy.sample = timed_sample

    if device == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        precision=precision,  # type: ignore[arg-type]
        max_steps=args.warmup + args.steps,
        max_epochs=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        deterministic=args.deterministic,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Clock(), TimeSampling()],
    )
    trainer.fit(module, datamodule=data)
    timed = steps[args.warmup :]
    if not timed:
        raise SystemExit(f"llm_gpu.py: {precision}: no timed step (only {len(steps)} steps ran)")
    per_step = sum(timed) / len(timed)
    tasks = int(data_args["batch_size"])
    result: dict[str, Any] = {
        "precision": precision,
        "model": args.model,
        "dtype": args.dtype,
        "dataset": data_args["dataset"],
        "tasks_per_step": tasks,
        "group_size": int(model_args["group_size"]),
        "timed_steps": len(timed),
        "first_step_s": round(steps[0], 2),
        "s_per_step": round(per_step, 3),
        "rollouts_per_s": round(sampling["rollouts"] / max(sampling["seconds"], 1e-9), 1),
        "tasks_per_hour": round(3600 * tasks / per_step),
    }
    if device == "cuda":
        result["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 1024**3, 2)
        result["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved() / 1024**3, 2)
    else:
        result["peak_rss_gb"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2
        )
    return result


def main(argv: list[str] | None = None) -> None:
    """Check for CUDA, then run every precision and print the numbers."""
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(NO_CUDA)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        where = f"{props.name}, {props.total_memory / 1024**3:.0f} GiB, CUDA {torch.version.cuda}"
    else:
        where = f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {where}; torch {torch.__version__}", flush=True)
    began = time.perf_counter()
    results = []
    for i, precision in enumerate(args.precisions):
        left = args.budget_s - (time.perf_counter() - began)
        share = max(left / (len(args.precisions) - i), 1.0)
        results.append(run(precision, share, args))
        print(json.dumps(results[-1]), flush=True)
    memory = "peak_gpu_gb" if args.device == "cuda" else "peak_rss_gb"
    print(f"\n| precision | s / step | rollouts / s | tasks / h | {memory} |")
    print("|---|---|---|---|---|")
    for r in results:
        row = (r["precision"], r["s_per_step"], r["rollouts_per_s"], r["tasks_per_hour"], r[memory])
        print("| " + " | ".join(str(v) for v in row) + " |")
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
