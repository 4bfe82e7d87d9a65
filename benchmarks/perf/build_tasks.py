"""Time building every ml-100k task (EVALUATION.md target: ≤ 30 s on the 2-core CPU).

Measures, median of ``--repeats`` runs: loading the files, building the tasks of every split for
the three built-in needs (``train_cuts_per_user`` cuts per train user, K = 20, L = 10), and
materialising every task as :class:`~flexrec.types.RankingBatch` with prompt text.

Run: ``.venv/bin/python benchmarks/perf/build_tasks.py [--root ../shared/data] [--cuts 4]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from flexrec.data.datamodule import TaskCollator
from flexrec.data.loaders import load_dataset
from flexrec.data.tasks import build_tasks
from flexrec.needs.builtin import ExploreNewTopics, MaximizeInterest, TrendPromotion

DEFAULT_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data"
TARGET_S = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--cuts", type=int, default=4, help="cuts per train user")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"load": [], "build": [], "batches+text": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        data = load_dataset(args.dataset, args.root)
        times["load"].append(time.perf_counter() - start)
        needs = [
            cls().bind(data.scale, data.trend_window)
            for cls in (MaximizeInterest, ExploreNewTopics, TrendPromotion)
        ]
        start = time.perf_counter()
        tasks = build_tasks(data, needs, train_cuts_per_user=args.cuts)
        times["build"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for split in tasks.values():
            collate = TaskCollator(split, data, needs)
            for first in range(0, len(split), 256):
                collate(range(first, min(first + 256, len(split))))
        times["batches+text"].append(time.perf_counter() - start)
    counts = ", ".join(f"{name} {len(t):,}" for name, t in tasks.items())
    print(f"{data.summary()}\ntasks (3 needs): {counts}")
    total = 0.0
    for name, values in times.items():
        median = statistics.median(values)
        total += median
        print(f"{name:>14}: {median:7.3f} s (median of {len(values)})")
    verdict = "meets" if total <= TARGET_S else "MISSES"
    print(f"{'total':>14}: {total:7.3f} s — {verdict} the {TARGET_S:.0f} s target")


if __name__ == "__main__":
    main()
