"""Semi-synthetic KuaiRec: exact schema, round trip through the real-file loader, seeding.

The simulator runs on made-up KuaiRec tag tables (:func:`flexrec.testing.fakes.fake_kuairec_side`),
so every clone runs these tests; only the caption round trip needs the real side tables
(``../shared/data/kuairec-side``: the fake has no caption table) and skips without them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flexrec.data.kuairec import MATRIX_COLUMNS, load_kuairec
from flexrec.data.loaders import load_dataset
from flexrec.data.simulator import SimulatorConfig, simulate_kuairec, write_simulation
from flexrec.testing.fakes import fake_kuairec_side

SMALL = SimulatorConfig(num_users=40, num_items=60, num_days=10, seed=3)


@pytest.fixture(scope="module")
def side(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Made-up KuaiRec side tables (``item_categories.csv`` only)."""
    return fake_kuairec_side(tmp_path_factory.mktemp("kuairec-side"))


def test_written_files_have_the_official_schema(side: Path, tmp_path: Path) -> None:
    folder = write_simulation(side, tmp_path / "kuairec-sim", SMALL)
    matrix = pd.read_csv(folder / "small_matrix.csv")
    assert tuple(matrix.columns) == MATRIX_COLUMNS
    assert len(matrix) == 40 * 60  # dense: every user × item
    assert matrix.groupby("user_id")["video_id"].nunique().eq(60).all()
    np.testing.assert_allclose(
        matrix["play_duration"] / matrix["video_duration"], matrix["watch_ratio"], atol=1e-3
    )
    daily = pd.read_csv(folder / "item_daily_features.csv")
    assert len(daily) == 60 * 10 and {"video_id", "date", "play_cnt"} <= set(daily.columns)
    assert not (folder / "kuairec_caption_category.csv").exists()  # no captions to copy
    loaded = load_kuairec(folder, name="kuairec-sim")
    memory = simulate_kuairec(side, SMALL)
    assert loaded.num_interactions == memory.num_interactions == 2400
    np.testing.assert_array_equal(loaded.item_ids, memory.item_ids)
    np.testing.assert_array_equal(loaded.item_categories, memory.item_categories)
    np.testing.assert_allclose(np.sort(loaded.label), np.sort(memory.label), atol=1e-6)
    assert loaded.item_daily is not None and len(loaded.item_daily) == 600
    assert loaded.item_text[0] == memory.item_text[0]


def test_seeded_and_trends_visible(side: Path) -> None:
    a = simulate_kuairec(side, SMALL)
    b = simulate_kuairec(side, SMALL)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.timestamp, b.timestamp)
    assert a.scale.threshold == 1.0 and a.trend_window == 86_400
    assert a.item_categories.shape == (60, 31) and a.item_categories.any(1).all()
    # each item's watches concentrate around its peak day: the busiest day holds > 1/10 of them
    days = (a.timestamp - a.timestamp.min()) // 86_400
    per_item = np.zeros((a.num_items, 10))
    np.add.at(per_item, (a.item, days), 1)
    assert (per_item.max(1) / per_item.sum(1)).mean() > 0.2
    other = simulate_kuairec(side, SimulatorConfig(num_users=40, num_items=60, num_days=10, seed=4))
    assert not np.array_equal(a.label, other.label)


def test_load_dataset_kuairec_sim(tmp_path: Path) -> None:
    fake_kuairec_side(tmp_path / "kuairec-side")
    data = load_dataset("kuairec-sim", root=tmp_path)  # simulated in memory from the side tables
    assert data.name == "kuairec-sim" and data.num_users == 300 and data.num_items == 1000
    write_simulation(tmp_path / "kuairec-side", tmp_path / "kuairec-sim", SMALL)
    assert load_dataset("kuairec-sim", root=tmp_path).num_interactions == 2400  # the written one


def test_real_side_tables_captions_round_trip(kuairec_side_dir: Path, tmp_path: Path) -> None:
    """The real caption table (Chinese text, captions with newlines) reaches the item text."""
    folder = write_simulation(kuairec_side_dir, tmp_path / "kuairec-sim", SMALL)
    assert (folder / "kuairec_caption_category.csv").is_file()
    memory = simulate_kuairec(kuairec_side_dir, SMALL)
    loaded = load_kuairec(folder, name="kuairec-sim")
    assert sum(bool(text) for text in memory.item_text) > 50  # most of the 60 videos
    assert all("\n" not in text for text in memory.item_text)
    assert list(loaded.item_text) == list(memory.item_text)
