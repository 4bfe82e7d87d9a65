"""Feedback models: pass-through of observed gains, KNN on hand-built matrices, critic calibration.

The critic runs on semi-synthetic KuaiRec simulated from made-up side tables
(:func:`flexrec.testing.fakes.fake_kuairec_side`), so these tests need no real data files. The
properties every feedback model must have are checked by the contract suite (tests/test_contracts.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flexrec.critic.base import calibration, imputation_metrics
from flexrec.critic.ensemble import EnsembleCritic
from flexrec.critic.knn import ItemKNN, UserKNN
from flexrec.data.datamodule import TaskCollator
from flexrec.data.dataset import MOVIELENS_SCALE
from flexrec.data.feedback import FeedbackData
from flexrec.data.simulator import SimulatorConfig, simulate_kuairec
from flexrec.data.tasks import build_tasks
from flexrec.needs.builtin import MaximizeInterest, TrendPromotion
from flexrec.registry import registries
from flexrec.testing.fakes import fake_kuairec_side


def _hand_data() -> FeedbackData:
    # users 0 and 1 agree, user 2 is opposite; user 0 has not labelled item 2
    user = np.array([0, 0, 1, 1, 1, 2, 2, 2])
    item = np.array([0, 1, 0, 1, 2, 0, 1, 2])
    label = np.array([5.0, 1.0, 5.0, 1.0, 5.0, 1.0, 5.0, 1.0])
    need = MaximizeInterest().bind(MOVIELENS_SCALE)
    cats = np.eye(3, dtype=bool)
    return FeedbackData(user, item, label, 3, 3, cats, {need.name: need})


def test_user_knn_hand_built() -> None:
    model = UserKNN(k=1).fit(_hand_data())
    mean, var = model.predict_labels(np.array([0]), np.array([2]))
    # user 0: mean shrunk to the global mean with 5 pseudo-counts; nearest neighbour user 1 deviates +5 - m1 on item 2
    g = 3.0  # global mean
    m0, m1 = (6 + 5 * g) / 7, (11 + 5 * g) / 8
    assert mean[0] == pytest.approx(m0 + (5 - m1), abs=1e-5) and var[0] == 0


def test_item_knn_hand_built() -> None:
    model = ItemKNN(k=1).fit(_hand_data())
    mean, _ = model.predict_labels(np.array([0]), np.array([2]))
    # item 2 correlates with item 0 (+) and against item 1; user 0 liked item 0
    assert mean[0] > 3.25


@pytest.fixture(scope="module")
def sim_tasks(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    side = fake_kuairec_side(tmp_path_factory.mktemp("kuairec-side"))
    data = simulate_kuairec(side, SimulatorConfig(num_users=120, num_items=300, seed=1))
    needs = [n.bind(data.scale, data.trend_window) for n in (MaximizeInterest(), TrendPromotion())]
    tasks = build_tasks(data, needs, sparse_p=0.1, seed=0)
    return data, needs, tasks


def test_predict_passes_observed_through_and_fills_the_rest(sim_tasks: tuple) -> None:
    data, needs, tasks = sim_tasks
    feedback = FeedbackData.from_tasks(data, tasks["train"], needs)
    assert abs(len(feedback) / (0.8 * 120 * 300) - 0.1) < 0.02
    model = ItemKNN().fit(feedback)
    batch = TaskCollator(tasks["train"], data, needs, with_text=False)(list(range(0, 600, 7)))
    gains, var = model.fill(batch)
    assert torch.equal(gains[batch.observed], batch.gains[batch.observed])
    assert (var == 0).all() and gains.shape == batch.gains.shape
    labels, _ = model.predict_labels(
        batch.user_ids[:, None].expand_as(batch.candidate_ids).numpy(), batch.candidate_ids.numpy()
    )
    rows = [i for i, n in enumerate(batch.need) if n == "maximize_interest"]
    expected = needs[0].gains(torch.from_numpy(labels[rows]).float())
    hidden = ~batch.observed[rows]
    torch.testing.assert_close(gains[rows][hidden], expected[hidden])


def test_critic_beats_knn_and_is_calibrated(sim_tasks: tuple) -> None:
    data, needs, tasks = sim_tasks
    feedback = FeedbackData.from_tasks(data, tasks["train"], needs)
    critic = registries.feedback.build({"name": "critic", "args": {"members": 2, "epochs": 15}})
    assert isinstance(critic, EnsembleCritic)
    critic.fit(feedback)
    scores = imputation_metrics(critic, tasks["train"])
    knn = imputation_metrics(ItemKNN().fit(feedback), tasks["train"])
    assert scores["rmse"] < knn["rmse"]
    assert 0.85 <= scores["coverage95"] <= 0.99
    batch = TaskCollator(tasks["train"], data, needs, with_text=False)(list(range(40)))
    gains, var = critic.fill(batch)
    assert (var[~batch.observed] > 0).all() and (var[batch.observed] == 0).all()
    assert ((gains >= 0) & (gains <= 1)).all()
    fit, held = feedback.split(0.2, seed=3)
    report = calibration(critic.fit(fit), held)
    assert np.isfinite(report["nll"]) and report["count"] == len(held)
