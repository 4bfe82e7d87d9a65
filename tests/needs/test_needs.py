"""Built-in needs on hand-built tasks with hand-computed gains and relevance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flexrec.data.dataset import KUAIREC_SCALE, MOVIELENS_SCALE
from flexrec.needs.base import ItemStats, NeedContext
from flexrec.needs.builtin import ExploreNewTopics, MaximizeInterest, TrendPromotion
from flexrec.needs.functional import novelty, percentile
from flexrec.registry import registries

REPO = Path(__file__).resolve().parents[2]

LABELS = torch.tensor([[5.0, 4.0, 2.0, 4.5]])
CONTEXT = NeedContext(
    novelty=torch.tensor([[0.0, 1.0, 1.0, 0.5]]),
    trend=torch.tensor([[1.0, 0.0, 1 / 3, 2 / 3]]),
)


def test_maximize_interest_movielens() -> None:
    need = MaximizeInterest().bind(MOVIELENS_SCALE)
    torch.testing.assert_close(need.gains(LABELS, CONTEXT), torch.tensor([[1.0, 0.5, 0.0, 0.75]]))
    assert need.relevant(LABELS, CONTEXT).tolist() == [[True, True, False, True]]


def test_maximize_interest_kuairec_watch_ratio() -> None:
    need = MaximizeInterest().bind(KUAIREC_SCALE)
    labels = torch.tensor([0.5, 1.0, 2.0, 5.0, float("nan")])
    torch.testing.assert_close(need.gains(labels), torch.tensor([0.0, 0.0, 0.5, 1.0, 0.0]))
    assert need.relevant(labels).tolist() == [False, False, True, True, False]


def test_explore_new_topics() -> None:
    need = ExploreNewTopics().bind(MOVIELENS_SCALE)
    torch.testing.assert_close(need.gains(LABELS, CONTEXT), torch.tensor([[0.0, 0.5, 0.0, 0.375]]))
    assert need.relevant(LABELS, CONTEXT).tolist() == [[False, True, False, True]]
    strict = ExploreNewTopics(min_novelty=0.75).bind(MOVIELENS_SCALE)
    assert strict.relevant(LABELS, CONTEXT).tolist() == [[False, True, False, False]]


def test_trend_promotion() -> None:
    need = TrendPromotion().bind(MOVIELENS_SCALE, trend_window=30 * 86_400)
    expected = torch.tensor([[1.0, 0.25, 1 / 6, 0.375 + 1 / 3]])
    torch.testing.assert_close(need.gains(LABELS, CONTEXT), expected)
    assert need.relevant(LABELS, CONTEXT).tolist() == [[True, False, False, False]]
    assert need.window == 30 * 86_400
    assert TrendPromotion(window=3600).bind(MOVIELENS_SCALE, 86_400).window == 3600


def test_novelty_and_percentile_hand_built() -> None:
    history = torch.tensor([[True, False, True, False]])  # categories 0 and 2 seen
    candidates = torch.tensor(
        [[[1, 0, 0, 0], [0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 0, 0]]], dtype=torch.bool
    )
    torch.testing.assert_close(novelty(history, candidates), torch.tensor([[0.0, 1.0, 0.5, 0.0]]))
    counts = torch.tensor([[3.0, 0.0, 3.0, 10.0, 1.0]])
    torch.testing.assert_close(percentile(counts), torch.tensor([[0.625, 0.0, 0.625, 1.0, 0.25]]))


def test_explicit_thresholds_override_dataset() -> None:
    need = MaximizeInterest(threshold=4.0, relevant_threshold=5.0).bind(MOVIELENS_SCALE)
    torch.testing.assert_close(need.gains(torch.tensor([4.0, 4.5, 5.0])), torch.tensor([0, 0.5, 1]))
    assert need.relevant(torch.tensor([4.5, 5.0])).tolist() == [False, True]


def test_unbound_need_raises() -> None:
    with pytest.raises(ValueError, match="bind"):
        MaximizeInterest().gains(LABELS)


@pytest.mark.parametrize("cls", [MaximizeInterest, ExploreNewTopics, TrendPromotion])
def test_instructions(cls: type) -> None:
    need = cls()
    assert len(cls.instructions) >= 3 and cls.held_out
    rng = np.random.default_rng(0)
    train = {need.instruction(rng, "train") for _ in range(200)}
    held = {cls.instructions[i] for i in cls.held_out}
    assert train == set(cls.instructions) - held
    assert need.instruction(rng, "heldout") in held
    assert need.instruction(rng, "test") == cls.instructions[0]


def test_item_text() -> None:
    item = ItemStats("Heat", 1995, ["Action", "Crime"], count=52, mean_label=4.06, recent=37)
    assert MaximizeInterest().bind(MOVIELENS_SCALE).item_text(item) == (
        "Heat (1995) | Action, Crime | mean rating 4.1 from 52 users"
    )
    trend = TrendPromotion().bind(MOVIELENS_SCALE, 30 * 86_400)
    assert trend.item_text(item).endswith("| 37 views in the last 30 days")
    kuai = TrendPromotion().bind(KUAIREC_SCALE, 86_400)
    assert kuai.item_text(ItemStats("video 3", -1, [], recent=2)) == (
        "video 3 | no category | no watch ratios yet | 2 views in the last 24 hours"
    )
    history = ItemStats("Heat", 1995, ["Action"], label=4.0)
    assert MaximizeInterest().history_text(history) == "Heat (1995) | Action | your rating: 4"


def test_compact_text_style() -> None:
    item = ItemStats("Heat (Alt title)", 1995, ["Action", "Crime"], 52, mean_label=4.06, recent=37)
    need = MaximizeInterest().bind(MOVIELENS_SCALE, text_style="compact")
    assert need.item_text(item) == "Heat | Action, Crime | avg 4.1 (52)"
    assert need.item_text(ItemStats("(500) Days", 2009, [])) == "(500) Days | no category | unrated"
    assert need.history_text(ItemStats("Heat", 1995, ["Action"], label=4.0)) == (
        "Heat | Action | rated 4"
    )
    trend = TrendPromotion().bind(MOVIELENS_SCALE, 30 * 86_400, text_style="compact")
    assert trend.item_text(item) == "Heat | Action, Crime | avg 4.1 (52) | 37 in 30 days"
    with pytest.raises(ValueError, match="text_style must be one of"):
        MaximizeInterest().bind(MOVIELENS_SCALE, text_style="tiny")


def test_registry_builds_needs_with_args() -> None:
    need = registries.need.build(
        {"name": "trend_promotion", "args": {"window": 7200, "weight": 0.3}}
    )
    assert isinstance(need, TrendPromotion) and need.window == 7200 and need.weight == 0.3
    assert {"maximize_interest", "explore_new_topics", "trend_promotion"} <= set(
        registries.need.names()
    )


def test_cli_rejects_an_unknown_text_style_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flexrec.cli",
            "fit",
            f"--config={REPO / 'configs' / 'quickstart.yaml'}",
            "--data.init_args.text_style=tiny",
            f"--trainer.default_root_dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        timeout=300,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "text_style" in lines[0], proc.stderr
    assert not (tmp_path / "run").exists()
