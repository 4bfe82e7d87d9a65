"""The per-task metrics file next to the run record."""

from __future__ import annotations

import math
from pathlib import Path

from flexrec.run_record import TASK_COLUMNS, read_task_metrics, write_task_metrics


def test_per_task_metrics_round_trip_exactly_with_skipped_values_empty(tmp_path: Path) -> None:
    rows = [
        {"who": "policy", "task": 3, "user": 17, "need": "a", "cut": 5, "candidates": "0abc",
         "ndcg@5": 0.1 + 0.2, "recall@5": math.nan},
        {"who": "feature:popularity", "task": 3, "user": 17, "need": "a", "cut": 5,
         "candidates": "0abc", "ndcg@5": 1 / 3, "recall@5": 0.5, "top5_coverage": 0.25},
    ]  # fmt: skip
    path = write_task_metrics(tmp_path, "test", rows)
    assert path == tmp_path / "tasks_test.csv"
    assert [p.name for p in tmp_path.iterdir()] == ["tasks_test.csv"]  # no temporary file left
    header = path.read_text().splitlines()[0].split(",")
    assert header == [*TASK_COLUMNS, "ndcg@5", "recall@5", "top5_coverage"]
    first, second = read_task_metrics(path)
    assert first["who"] == "policy" and first["task"] == "3" and first["user"] == "17"
    assert first["ndcg@5"] == 0.1 + 0.2  # full precision: means over tasks stay exact
    assert math.isnan(first["recall@5"]) and math.isnan(first["top5_coverage"])
    assert second["ndcg@5"] == 1 / 3 and second["top5_coverage"] == 0.25
