"""Critic vs KNN imputation on the semi-synthetic KuaiRec with 10 % of training labels kept.

For each seed: simulate KuaiRec (default 300 users × 1,000 videos, dense), build sparse train tasks
(p = 0.1), fit each feedback model on the observed training labels, and score its label predictions
on the **hidden** candidate labels of the train tasks against the simulator's truth: RMSE, Gaussian
NLL and the share of truths inside the 95 % interval (targets: critic RMSE below item- and user-KNN,
coverage within 85–99 %). Prints mean ± standard error over seeds.

Run: ``.venv/bin/python benchmarks/perf/critic_imputation.py [--seeds 0 1 2] [--p 0.1]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from flexrec.critic.base import imputation_metrics
from flexrec.critic.ensemble import EnsembleCritic
from flexrec.critic.knn import ItemKNN, UserKNN
from flexrec.data.feedback import FeedbackData
from flexrec.data.simulator import SimulatorConfig, simulate_kuairec
from flexrec.data.tasks import build_tasks
from flexrec.needs.builtin import MaximizeInterest

DEFAULT_SIDE = Path(__file__).resolve().parents[3] / "shared" / "data" / "kuairec-side"


def _fmt(values: list[float]) -> str:
    arr = np.asarray(values)
    if not np.isfinite(arr).all():
        return "n/a (σ² = 0)"
    se = arr.std(ddof=1) / np.sqrt(len(arr)) if len(arr) > 1 else 0.0
    return f"{arr.mean():.4f} ± {se:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", default=str(DEFAULT_SIDE))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--p", type=float, default=0.1)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--items", type=int, default=1000)
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {}
    for seed in args.seeds:
        data = simulate_kuairec(args.side, SimulatorConfig(args.users, args.items, seed=seed))
        needs = [MaximizeInterest().bind(data.scale, data.trend_window)]
        tasks = build_tasks(data, needs, sparse_p=args.p, seed=seed)["train"]
        feedback = FeedbackData.from_tasks(data, tasks, needs)
        hidden = int((~tasks.observed).sum())
        print(f"seed {seed}: {len(feedback):,} observed labels, {hidden:,} hidden candidates")
        for model in (EnsembleCritic(seed=seed), ItemKNN(), UserKNN()):
            start = time.perf_counter()
            model.fit(feedback)
            scores = imputation_metrics(model, tasks)
            scores["fit_s"] = time.perf_counter() - start
            if scores["nll"] == float("inf"):
                scores["coverage95"] = float("inf")
            for key, value in scores.items():
                results.setdefault(model.name, {}).setdefault(key, []).append(value)
    print(f"\nhidden train labels, p = {args.p}, {len(args.seeds)} seeds (mean ± s.e.)")
    print(f"{'model':<10} {'RMSE':>18} {'NLL':>18} {'coverage95':>18} {'fit s':>8}")
    for name, scores in results.items():
        print(
            f"{name:<10} {_fmt(scores['rmse']):>18} {_fmt(scores['nll']):>18} "
            f"{_fmt(scores['coverage95']):>18} {np.mean(scores['fit_s']):>8.1f}"
        )


if __name__ == "__main__":
    main()
