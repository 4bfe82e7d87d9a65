"""Load test of ``flexrec serve`` on localhost: requests/s and p50/p99 latency, both policies.

For each policy the script trains a small run of its own (the speed of serving does not depend
on how long the model trained): the quickstart's native policy for 5 steps, and SmolLM2-135M-
Instruct + LoRA r 8 (``configs/smollm2.yaml``, the documented LLM recipe) for 1 step; or it serves
the checkpoints, run folders or exports given with ``--native`` / ``--llm``. It then starts
``flexrec serve`` in a child process and, for each concurrency level, has that many client threads
(one kept-alive HTTP connection each) send requests one after the other: a history of 10 films
and K = 20 candidates drawn from the 500 most rated films of MovieLens latest-small, the need
``maximize_interest``. Each level sends a bounded number of requests (``--requests`` for the native
policy, ``--llm-requests`` for the LLM) after one warm-up request per thread.

Printed per policy and concurrency: requests, requests/s, p50 and p99 latency (ms, client side,
including HTTP), and the server's mean batch size over the level (``GET /health`` counters).

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/perf/serve_load.py`` (``--policies native``
for the native policy alone; ``--llm-model tiny`` swaps SmolLM2 for the tiny random test LLM).
"""

from __future__ import annotations

import argparse
import http.client
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from flexrec.testing.server import call, running_server

REPO = Path(__file__).resolve().parents[2]


def _fit(root: Path, *args: str) -> Path:
    """Train a run with ``flexrec fit`` (its output to a log file); its run folder."""
    root.mkdir(parents=True, exist_ok=True)
    log = root / "fit.log"
    with log.open("w") as handle:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "flexrec.cli",
                "fit",
                *args,
                f"--trainer.default_root_dir={root}",
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if proc.returncode != 0:
        raise SystemExit(f"training failed, see {log}")
    return root / "logs" / "version_0"


def native_run(root: Path) -> Path:
    """The quickstart's native policy after 5 steps."""
    return _fit(
        root / "native",
        f"--config={REPO / 'configs' / 'quickstart.yaml'}",
        "--trainer.max_steps=5",
        "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false",
    )


def llm_run(root: Path, model: str) -> Path:
    """SmolLM2 + LoRA (configs/smollm2.yaml) after one step, or the tiny test LLM."""
    args = [f"--config={REPO / 'configs' / 'smollm2.yaml'}"]
    if model == "tiny":
        from flexrec.testing.tiny_llm import build_tiny_llm

        path = build_tiny_llm(root / "tiny-llm")
        args.append(f"--model.policy={{name: llm, args: {{model: {path}, lora: {{r: 8}}}}}}")
    return _fit(
        root / "llm",
        *args,
        "--trainer.max_steps=1",
        "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false",
        "--data.init_args.max_train_tasks=1",
        "--data.init_args.batch_size=1",
        "--model.group_size=2",
    )


def popular_items(count: int = 500) -> list[int]:
    """The ``count`` most rated items of MovieLens latest-small (their movieIds)."""
    import numpy as np

    from flexrec.data import load_dataset

    data = load_dataset("ml-latest-small")
    ratings = np.bincount(data.item, minlength=data.num_items)
    top = np.argsort(-ratings, kind="stable")[:count]
    return [int(data.item_ids[i]) for i in top]


def requests(items: list[int], count: int, seed: int) -> list[dict[str, object]]:
    """``count`` requests: 10 history films with ratings, 20 other candidates."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        chosen = rng.sample(items, 30)
        out.append(
            {
                "history": chosen[:10],
                "ratings": [rng.choice([3.0, 3.5, 4.0, 4.5, 5.0]) for _ in range(10)],
                "candidates": chosen[10:],
                "need": "maximize_interest",
            }
        )
    return out


def level(url: str, bodies: list[dict[str, object]], threads: int) -> dict[str, float]:
    """Send ``bodies`` from ``threads`` client threads (one warm-up request each first)."""
    parts = urlsplit(url)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    chunks = [bodies[i::threads] for i in range(threads)]
    warm = threading.Barrier(threads + 1)
    go = threading.Barrier(threads + 1)

    def client(chunk: list[dict[str, object]]) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)

        def send(body: dict[str, object]) -> tuple[int, object]:
            nonlocal conn
            try:
                return call(url, "POST", "/rank", body, connection=conn)
            except (ConnectionError, http.client.HTTPException):
                # the server closes a kept-alive connection idle for 5 s (uvicorn's default)
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
                return call(url, "POST", "/rank", body, connection=conn)

        for body in chunk[:1]:  # warm-up, not timed
            send(body)
        warm.wait()
        go.wait()
        for body in chunk:
            start = time.perf_counter()
            status, answer = send(body)
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                if status != 200:
                    errors.append(str(answer))
        conn.close()

    workers = [threading.Thread(target=client, args=(c,)) for c in chunks]
    for w in workers:
        w.start()
    warm.wait()
    before = call(url, "GET", "/health")[1]
    go.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    wall = time.perf_counter() - start
    after = call(url, "GET", "/health")[1]
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, e.g. {errors[0]}")
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    batches = after["batches"] - before["batches"]
    return {
        "requests": len(latencies),
        "rps": len(latencies) / wall,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": p99 * 1000,
        "mean_batch": (after["requests"] - before["requests"]) / max(batches, 1),
    }


def main() -> None:
    """Print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", default="native,llm", help="native,llm (both)")
    parser.add_argument("--native", help="checkpoint, run folder or export of a native policy")
    parser.add_argument("--llm", help="checkpoint, run folder or export of an LLM policy")
    parser.add_argument("--llm-model", default="smollm2", choices=["smollm2", "tiny"])
    parser.add_argument(
        "--concurrency", default="1,8,32", help="native: client threads per level (1,8,32)"
    )
    parser.add_argument(
        "--llm-concurrency", default="1,4", help="LLM: client threads per level (1,4)"
    )
    parser.add_argument("--requests", type=int, default=400, help="native requests per level")
    parser.add_argument("--llm-requests", type=int, default=12, help="LLM requests per level")
    parser.add_argument("--max-batch-size", default="16")
    parser.add_argument("--max-wait-ms", default="5")
    parser.add_argument("--threads", default="1", help="the server's torch threads (1)")
    args = parser.parse_args()
    items = popular_items()
    print(
        "policy  concurrency  requests  requests/s  p50 ms  p99 ms  mean batch  "
        f"(max batch {args.max_batch_size}, max wait {args.max_wait_ms} ms, "
        f"{args.threads} torch thread(s))",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        root = Path(tmp)
        for policy in args.policies.split(","):
            if policy == "native":
                model, count = args.native or native_run(root), args.requests
                levels = [int(c) for c in args.concurrency.split(",")]
            else:
                model, count = args.llm or llm_run(root, args.llm_model), args.llm_requests
                levels = [int(c) for c in args.llm_concurrency.split(",")]
            serve_args = [
                "--max-batch-size",
                args.max_batch_size,
                "--max-wait-ms",
                args.max_wait_ms,
            ]
            with running_server(model, *serve_args) as url:
                for threads in levels:
                    bodies = requests(items, max(count, 2 * threads), seed=threads)
                    r = level(url, bodies, threads)
                    print(
                        f"{policy:<7} {threads:>11}  {r['requests']:>8}  {r['rps']:>10.2f}  "
                        f"{r['p50_ms']:>6.0f}  {r['p99_ms']:>6.0f}  {r['mean_batch']:>10.2f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
