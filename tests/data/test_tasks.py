"""Task builder and data module: no leakage, true labels, disjoint users, seeds, sparse mode.

All on the MovieLens latest-small copy embedded in the package (610 users), so any clone runs them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from flexrec.data.datamodule import FlexRecDataModule
from flexrec.data.dataset import MOVIELENS_SCALE, InteractionData
from flexrec.data.tasks import TaskSet, build_tasks, split_users
from flexrec.needs.builtin import ExploreNewTopics, MaximizeInterest, TrendPromotion


def _needs(data: InteractionData) -> list:
    return [
        cls().bind(data.scale, data.trend_window)
        for cls in (MaximizeInterest, ExploreNewTopics, TrendPromotion)
    ]


@pytest.fixture(scope="module")
def movielens_tasks(ml_latest_small: InteractionData) -> dict[str, TaskSet]:
    return build_tasks(ml_latest_small, _needs(ml_latest_small), train_cuts_per_user=3, seed=5)


def _lookup(data: InteractionData, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    keys = data.user * data.num_items + data.item
    order = np.argsort(keys)
    pos = np.searchsorted(keys[order], users * data.num_items + items)
    found = order[pos]
    assert (keys[found] == users * data.num_items + items).all()
    return found


def test_no_future_in_history_and_true_candidate_labels(
    ml_latest_small: InteractionData, movielens_tasks: dict[str, TaskSet]
) -> None:
    for tasks in movielens_tasks.values():
        valid = tasks.history >= 0
        users = np.broadcast_to(tasks.users[:, None], tasks.history.shape)
        rows = _lookup(ml_latest_small, users[valid], tasks.history[valid])
        cut = np.broadcast_to(tasks.cut[:, None], tasks.history.shape)[valid]
        assert (ml_latest_small.timestamp[rows] < cut).all()
        np.testing.assert_array_equal(ml_latest_small.label[rows], tasks.history_labels[valid])
        users = np.broadcast_to(tasks.users[:, None], tasks.candidates.shape)
        rows = _lookup(ml_latest_small, users.ravel(), tasks.candidates.ravel())
        np.testing.assert_array_equal(ml_latest_small.label[rows], tasks.true_labels.ravel())
        assert (
            ml_latest_small.timestamp[rows] >= np.repeat(tasks.cut, tasks.candidates.shape[1])
        ).all()
        assert tasks.observed.all()
        assert all(len(set(row)) == len(row) for row in tasks.candidates.tolist())


def test_users_split_and_counts(movielens_tasks: dict[str, TaskSet]) -> None:
    train, val, test = (set(movielens_tasks[s].users.tolist()) for s in ("train", "val", "test"))
    assert not train & test and not train & val and not val & test
    assert len(train) + movielens_tasks["train"].skipped_users == 488  # round(0.8 * 610)
    parts = split_users(610, seed=5)
    assert sum(len(p) for p in parts.values()) == 610
    assert len(movielens_tasks["test"]) == 3 * len(test)  # one cut per test user, three needs
    assert (np.bincount(movielens_tasks["test"].need) == len(test)).all()


def test_features_only_use_the_past(
    ml_latest_small: InteractionData, movielens_tasks: dict[str, TaskSet]
) -> None:
    tasks = movielens_tasks["val"]
    for t in range(0, len(tasks), 37):
        for k in range(0, 20, 7):
            item, cut = tasks.candidates[t, k], tasks.cut[t]
            earlier = (ml_latest_small.item == item) & (ml_latest_small.timestamp < cut)
            assert tasks.count[t, k] == earlier.sum()
            if earlier.any():
                assert tasks.mean_label[t, k] == pytest.approx(
                    ml_latest_small.label[earlier].mean()
                )
            window = earlier & (ml_latest_small.timestamp >= cut - ml_latest_small.trend_window)
            assert tasks.recent[t, k] == window.sum()
    assert tasks.features.shape[-1] == 6
    assert (tasks.features >= 0).all() and (tasks.features <= 1).all()


def test_seeded_reproducibility(ml_latest_small: InteractionData) -> None:
    needs = _needs(ml_latest_small)[:1]
    a = build_tasks(ml_latest_small, needs, seed=1)["train"]
    b = build_tasks(ml_latest_small, needs, seed=1)["train"]
    c = build_tasks(ml_latest_small, needs, seed=2)["train"]
    np.testing.assert_array_equal(a.candidates, b.candidates)
    assert a.instruction == b.instruction
    assert not np.array_equal(a.users, c.users[: len(a.users)]) or len(a) != len(c)


def test_sparse_mode(ml_latest_small: InteractionData) -> None:
    tasks = build_tasks(ml_latest_small, _needs(ml_latest_small)[:1], sparse_p=0.1, seed=3)
    train = tasks["train"]
    assert abs(train.observed.mean() - 0.1) < 0.01
    assert tasks["test"].observed.all() and tasks["val"].observed.all()
    assert (train.gains[~train.observed] == 0).all() and not train.relevant[~train.observed].any()
    valid = train.history >= 0
    hidden_share = np.isnan(train.history_labels[valid]).mean()
    assert abs(hidden_share - 0.9) < 0.01


def test_ties_at_the_cut_go_to_candidates() -> None:
    frame = pd.DataFrame(
        {
            "user": [1] * 5,
            "item": [10, 11, 12, 13, 14],
            "label": [1.0, 2.0, 3.0, 4.0, 5.0],
            "timestamp": [100, 200, 200, 300, 400],
        }
    )
    items = pd.DataFrame(
        {
            "item": [10, 11, 12, 13, 14],
            "title": "m",
            "year": -1,
            "categories": [[0]] * 5,
            "text": "",
        }
    )
    data = InteractionData.build("tiny", frame, items, ["a"], MOVIELENS_SCALE)
    need = MaximizeInterest().bind(data.scale)
    tasks = build_tasks(data, [need], history_len=3, num_candidates=3, fractions=(0, 0, 1))["test"]
    # the latest cut with 3 candidates is t=200; both items at t=200 are candidates
    assert tasks.cut.tolist() == [200]
    assert tasks.history.tolist() == [[0, -1, -1]]
    assert sorted(tasks.candidates[0].tolist()) == [1, 2, 3]


def test_datamodule_batches() -> None:
    dm = FlexRecDataModule(
        needs=("maximize_interest", "explore_new_topics", "trend_promotion"),
        batch_size=32,
        max_train_tasks=200,
        max_eval_tasks=40,
    )
    info = dm.info
    assert (info.num_users, info.num_items, info.num_features) == (610, 9742, 6)
    assert info.context()["num_needs"] == 3 and info.feature_names[4] == "novelty"
    batch = next(iter(dm.train_dataloader()))
    assert len(set(batch.need)) >= 2
    assert batch.candidate_features.shape == (32, 20, 6) and batch.history_ids.shape == (32, 10)
    names = [info.needs[i] for i in batch.need_index.tolist()]
    assert names == batch.need
    assert len(batch.candidate_text[0]) == 20 and " | " in batch.candidate_text[0][0]
    assert batch.meta[0]["dataset"] == "ml-latest-small" and batch.meta[0]["split"] == "train"
    test_users = set(dm.tasks["test"].users.tolist())
    assert not test_users & set(dm.tasks["train"].users.tolist())
    test_needs = [n for b in dm.test_dataloader() for n in b.need]
    assert len(test_needs) == 39 and {test_needs.count(n) for n in info.needs} == {13}
    rows = [i for i, n in enumerate(batch.need) if n == "maximize_interest"]
    torch.testing.assert_close(batch.gains[rows], dm.needs[0].gains(batch.labels[rows]))


def test_eval_only_needs_are_scored_but_never_trained_on() -> None:
    dm = FlexRecDataModule(
        needs=("maximize_interest",),
        eval_needs=("explore_new_topics", "maximize_interest", "trend_promotion"),
        batch_size=64,
        max_train_tasks=300,
        max_eval_tasks=30,
        with_text=False,
    )
    info = dm.info
    # the vocabulary: training needs first, then the eval-only ones in their listed order
    assert info.needs == ("maximize_interest", "explore_new_topics", "trend_promotion")
    train = [b for b in dm.train_dataloader()]
    assert sum(b.batch_size for b in train) == 300
    assert {n for b in train for n in b.need} == {"maximize_interest"}
    assert {i for b in train for i in b.need_index.tolist()} == {0}
    val = [n for b in dm.val_dataloader() for n in b.need]
    assert (
        val == ["explore_new_topics"] * 10 + ["maximize_interest"] * 10 + ["trend_promotion"] * 10
    )
    # the same train tasks as a module that only knows the training need (same seed)
    alone = FlexRecDataModule(needs=("maximize_interest",), batch_size=64, max_train_tasks=300)
    alone_ids = torch.cat([b.candidate_ids for b in alone.train_dataloader()])
    torch.testing.assert_close(torch.cat([b.candidate_ids for b in train]), alone_ids)
    # a need trained on but not evaluated
    dm2 = FlexRecDataModule(
        needs=("maximize_interest", "trend_promotion"),
        eval_needs=("trend_promotion",),
        max_eval_tasks=8,
        with_text=False,
    )
    assert {n for b in dm2.test_dataloader() for n in b.need} == {"trend_promotion"}
    assert {n for b in dm2.train_dataloader() for n in b.need} == {
        "maximize_interest",
        "trend_promotion",
    }


def test_held_out_instructions_at_evaluation_keep_the_same_tasks() -> None:
    kwargs = dict(
        needs=("maximize_interest", "explore_new_topics"), max_eval_tasks=40, with_text=False
    )
    canonical = FlexRecDataModule(**kwargs)
    held = FlexRecDataModule(eval_instructions="held_out", **kwargs)
    held.setup()
    need_types = {n.name: type(n) for n in held.needs}
    for split in ("val", "test"):
        a = [b for b in canonical._loader(split, False)]
        b = [b for b in held._loader(split, False)]
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x.candidate_ids, y.candidate_ids)
            torch.testing.assert_close(x.gains, y.gains)
            for need, text_a, text_b in zip(x.need, x.instruction, y.instruction, strict=True):
                cls = need_types[need]
                assert text_a == cls.instructions[0]
                assert text_b in [cls.instructions[i] for i in cls.held_out]
    for batch in held.train_dataloader():
        for need, text in zip(batch.need, batch.instruction, strict=True):
            cls = need_types[need]
            assert text not in [cls.instructions[i] for i in cls.held_out]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eval_instructions": "paraphrased"}, "eval_instructions must be one of"),
        ({"eval_needs": []}, "eval_needs is empty"),
        ({"eval_needs": ["trend_promotion", "trend_promotion"]}, "eval_needs must be distinct"),
    ],
)
def test_bad_evaluation_settings_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FlexRecDataModule(**kwargs).setup()


def test_more_evaluation_cuts_per_user_keep_the_latest_and_add_distinct_earlier_ones(
    ml_latest_small: InteractionData, movielens_tasks: dict[str, TaskSet]
) -> None:
    more = build_tasks(
        ml_latest_small,
        _needs(ml_latest_small),
        train_cuts_per_user=3,
        seed=5,
        eval_cuts_per_user=3,
    )
    # training tasks are untouched; the default (one cut) is exactly the latest cut
    np.testing.assert_array_equal(more["train"].candidates, movielens_tasks["train"].candidates)
    for split in ("val", "test"):
        one, three = movielens_tasks[split], more[split]
        assert set(three.users.tolist()) == set(one.users.tolist())  # the same users
        counts = np.bincount(three.users[three.need == 0])
        assert counts.max() == 3 and (counts[counts > 0] >= 1).all()
        assert len(three) > 2 * len(one)
        for user, cut in zip(one.users[one.need == 0], one.cut[one.need == 0], strict=True):
            cuts = three.cut[(three.users == user) & (three.need == 0)]
            assert cut in cuts and (cuts <= cut).all()  # the latest cut is one of them
            assert len(np.unique(cuts)) == len(cuts)  # distinct cuts
            # the user has enough interactions after every cut for K candidates
            assert (
                (ml_latest_small.user == user) & (ml_latest_small.timestamp >= cuts.min())
            ).sum() >= 20


def test_evaluation_cuts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="eval_cuts_per_user must be >= 1, got 0"):
        FlexRecDataModule(eval_cuts_per_user=0)
