"""Implicit feedback in tasks: sampled non-interacted candidates, and the set-up checks that refuse
or warn on task sets that rank nothing (all on files generated into ``tmp_path``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from flexrec.data.checks import GainStats, check_gains, gain_stats
from flexrec.data.datamodule import FlexRecDataModule
from flexrec.data.dataset import MOVIELENS_SCALE
from flexrec.data.feedback import FeedbackData
from flexrec.data.generic import load_interactions
from flexrec.data.tasks import build_tasks, sample_negatives
from flexrec.errors import ConfigError, DataError, DataWarning
from flexrec.metrics import ranking_scores, reference_ranking, task_scores
from flexrec.needs.base import ItemStats
from flexrec.needs.builtin import MaximizeInterest, TrendPromotion

CLICKS = {"columns": {"item": "artist", "label": "interacted"}}
PLAYS = {"columns": {"item": "artist", "label": "plays"}}
SMALL = {"num_candidates": 10, "history_len": 5, "with_text": False}


def _module(path: Path, loader: dict, **kwargs: object) -> FlexRecDataModule:
    needs = kwargs.pop("needs", ["maximize_interest", "trend_promotion"])
    return FlexRecDataModule(str(path), loader=loader, needs=needs, **SMALL | kwargs)


def _setup(module: FlexRecDataModule) -> list[str]:
    """Set the module up; the DataWarnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module.setup()
    return [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


def _ndcg5(module: FlexRecDataModule, reference: str) -> float:
    batch = next(iter(module.val_dataloader()))
    scores = ranking_scores(reference_ranking(reference, batch, seed=3))
    values = task_scores(scores, batch.gains, batch.relevant, ks=(5,), mrr_k=5)["ndcg@5"]
    return float(values.nanmean())


# ---------------------------------------------------------------- sampled negatives
def test_negatives_are_items_the_user_never_touched(clicks_file: Path) -> None:
    data = load_interactions(clicks_file, **CLICKS)
    needs = [MaximizeInterest().bind(data.scale)]
    tasks = build_tasks(data, needs, history_len=5, num_candidates=10, seed=1, negatives=4)
    seen = set(zip(data.user.tolist(), data.item.tolist(), strict=True))
    for split in tasks.values():
        assert split.sampled is not None and (split.sampled.sum(1) == 4).all()
        for t in range(len(split)):
            pairs = [(int(split.users[t]), int(i)) for i in split.candidates[t]]
            touched = np.array([p in seen for p in pairs])
            np.testing.assert_array_equal(touched, ~split.sampled[t])
            assert len(set(split.candidates[t].tolist())) == 10
        np.testing.assert_array_equal(split.true_labels, np.where(split.sampled, 0.0, 1.0))
        assert split.observed.all()
        np.testing.assert_array_equal(split.gains, split.true_labels)
    again = build_tasks(data, needs, history_len=5, num_candidates=10, seed=1, negatives=4)
    np.testing.assert_array_equal(again["train"].candidates, tasks["train"].candidates)
    other = build_tasks(data, needs, history_len=5, num_candidates=10, seed=2, negatives=4)
    assert not np.array_equal(other["val"].candidates, tasks["val"].candidates)


def test_negatives_are_drawn_by_popularity(clicks_file: Path) -> None:
    data = load_interactions(clicks_file, **CLICKS)
    rng = np.random.default_rng(0)
    drawn = sample_negatives(data, np.arange(data.num_users), 8, rng)
    counts = np.bincount(data.item, minlength=data.num_items)
    # popularity-proportional: far more popular than a uniform draw over the items
    assert counts[drawn].mean() > 1.4 * counts.mean()


def test_negatives_that_cannot_be_found_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dense.csv"
    path.write_text("user,item,label\n" + "".join(f"u,i{i},1\n" for i in range(5)) + "v,i0,1\n")
    data = load_interactions(path)
    with pytest.raises(DataError, match="cannot sample 2 non-interacted candidates for user 'u'"):
        sample_negatives(
            data, np.array([list(data.user_ids).index("u")]), 2, np.random.default_rng(0)
        )


def test_feedback_data_learns_the_sampled_negatives(clicks_file: Path) -> None:
    module = _module(clicks_file, CLICKS)
    _setup(module)
    feedback = module.feedback_training_data()
    train = module.tasks["train"]
    assert train.sampled is not None
    sampled = {
        (int(train.users[t]), int(train.candidates[t, k]))
        for t, k in zip(*np.nonzero(train.sampled), strict=True)
    }
    zeros = {
        (int(u), int(i))
        for u, i, y in zip(feedback.user, feedback.item, feedback.label, strict=True)
        if y == 0
    }
    assert zeros == sampled
    assert isinstance(feedback, FeedbackData) and (feedback.label == 1).sum() > 0


# ---------------------------------------------------------------- the data module on implicit files
def test_a_bare_interaction_log_gives_ranking_tasks(clicks_file: Path) -> None:
    module = _module(clicks_file, CLICKS)
    notes = _setup(module)
    assert module.negatives == 5  # half of num_candidates for interacted labels
    assert notes == [
        "my_clicks has no timestamps: row order stands in for time (history order, cut points, "
        "statistics before a cut, trend window of 361 rows)"
    ]
    assert _ndcg5(module, "oracle") == 1.0 and _ndcg5(module, "random") < 0.75
    # string ids reach the batches' meta (this used to crash mid-fit)
    batch = next(iter(module.train_dataloader()))
    assert batch.meta[0]["user"].startswith("user_")
    # an explicit negatives wins; 0 gives back the trivial all-relevant tasks, which are refused
    assert _module(clicks_file, CLICKS, negatives=2).negatives == 2
    with pytest.raises(DataError) as info:
        _setup(_module(clicks_file, CLICKS, negatives=0))
    assert str(info.value).startswith(
        "maximize_interest: all 768 train tasks give every candidate the same gain, so no ranking "
        "beats another (oracle = random); every candidate is above τ = 0 interacted, all equally "
        "relevant"
    )


def test_play_counts_give_ranking_tasks(plays_file: Path) -> None:
    module = _module(plays_file, PLAYS)
    _setup(module)
    assert module.negatives == 0 and module.tasks["train"].sampled is None
    stats = {s.need: s for s in gain_stats(module.tasks["train"], module.needs, module.train_needs)}
    assert stats["maximize_interest"].flat < 0.1 * stats["maximize_interest"].tasks
    assert _ndcg5(module, "oracle") == 1.0 and _ndcg5(module, "random") < 0.6


def test_the_old_midpoint_scale_on_counts_is_refused(plays_file: Path) -> None:
    # τ halfway to 443,745 plays: no candidate of any task has any interest
    with pytest.raises(DataError) as info:
        _setup(_module(plays_file, PLAYS | {"labels": "range"}))
    assert str(info.value) == (
        "maximize_interest: all 768 train tasks give every candidate the same gain, so no ranking "
        "beats another (oracle = random); no candidate label is above the interest threshold "
        "τ = 221,873 plays: lower it (loader.labels: quantile, or loader.label_scale)"
    )
    # trend_promotion alone is not flat (its trend term ranks) but ignores the labels: refused
    with pytest.raises(DataError, match="trend_promotion: in all 768 train tasks the labels give "):
        _setup(_module(plays_file, PLAYS | {"labels": "range"}, needs=["trend_promotion"]))


def test_needs_that_cannot_work_without_categories_are_refused(plays_file: Path) -> None:
    with pytest.raises(
        DataError,
        match="explore_new_topics: all 768 train tasks .* \\(novelty needs item categories",
    ):
        _setup(_module(plays_file, PLAYS, needs=["explore_new_topics"]))


def test_movielens_sets_up_without_warnings() -> None:
    module = FlexRecDataModule(needs=["maximize_interest", "trend_promotion"], with_text=False)
    assert _setup(module) == []


def test_negatives_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="negatives must be < num_candidates \\(20\\)"):
        FlexRecDataModule(negatives=20)
    with pytest.raises(ConfigError, match="negatives must be >= 0 or null, got -1"):
        FlexRecDataModule(negatives=-1)
    with pytest.raises(ConfigError, match="unknown loader option 'sepp'"):
        FlexRecDataModule(loader={"sepp": ";"})


# ---------------------------------------------------------------- the checks themselves
def _stats(flat: int, no_gain: int | None = None, flat_interest: int | None = None) -> GainStats:
    no_gain = flat if no_gain is None else no_gain
    return GainStats(
        need="maximize_interest",
        split="train",
        tasks=100,
        no_gain=no_gain,
        equal_gain=flat - no_gain,
        flat_interest=flat if flat_interest is None else flat_interest,
        threshold=3.0,
        label="rating",
    )


def test_check_gains_warns_when_most_tasks_are_flat() -> None:
    assert check_gains([_stats(49)]) == []
    assert check_gains([_stats(60, no_gain=50)]) == [
        "maximize_interest: 60% of the 100 train tasks give every candidate the same gain "
        "(oracle = random: 50 with no gain, 10 all relevant); no candidate label is above the "
        "interest threshold τ = 3 rating: lower it (loader.labels: quantile, or loader.label_scale)"
    ]
    [warning] = check_gains([_stats(10, flat_interest=70)])
    assert warning.startswith("maximize_interest: in 70% of the 100 train tasks the labels give")
    with pytest.raises(DataError, match="all 100 train tasks give every candidate the same gain"):
        check_gains([_stats(100)])


def test_gain_stats_counts_flat_tasks(clicks_file: Path) -> None:
    module = _module(clicks_file, CLICKS)
    _setup(module)
    train = module.tasks["train"]
    train.gains[:3] = 0.0  # three tasks of the first need (maximize_interest) lose every gain
    train.gains[3] = 0.7
    [mi, tp] = gain_stats(train, module.needs, module.train_needs)
    assert (mi.need, mi.no_gain, mi.equal_gain, mi.flat_interest) == ("maximize_interest", 3, 1, 0)
    assert tp.flat == 0 and mi.tasks == tp.tasks == len(train) // 2


def test_trend_text_counts_rows_without_timestamps() -> None:
    need = TrendPromotion().bind(MOVIELENS_SCALE, 364, "compact", "rows")
    text = need.item_text(ItemStats("A", -1, [], 3, 1.0, recent=7))
    assert text.endswith("| 7 in 364 interactions")
    timed = TrendPromotion().bind(MOVIELENS_SCALE, 30 * 86_400, "compact")
    assert timed.item_text(ItemStats("A", -1, [], 3, 1.0, recent=7)).endswith("| 7 in 30 days")
