"""Traditional baselines: known rankings, Plackett–Luce consistency, fitting, end-to-end metrics."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch

from flexrec.baselines import (
    BPRMFPolicy,
    FeaturePolicy,
    ItemMeanPolicy,
    PopularityPolicy,
    RecentPopularityPolicy,
    SASRecPolicy,
    ScoringPolicy,
)
from flexrec.baselines.sasrec import training_windows
from flexrec.data.features import FEATURE_NAMES
from flexrec.data.feedback import FeedbackData
from flexrec.registry import registries
from flexrec.testing.batches import make_batch
from flexrec.types import DataInfo, RankingBatch

NUM_ITEMS = 30
GROUPS = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))  # even users consume all of group 0, odd ones group 1
NUM_USERS = 80


def _batch(candidates: list[list[int]], features: torch.Tensor | None = None, history=None):
    ids = torch.tensor(candidates)
    b, k = ids.shape
    hist = torch.tensor(history) if history is not None else torch.full((b, 1), -1)
    return RankingBatch(
        candidate_ids=ids,
        gains=torch.zeros(b, k),
        observed=torch.ones(b, k, dtype=torch.bool),
        relevant=torch.zeros(b, k, dtype=torch.bool),
        need=["maximize_interest"] * b,
        instruction=[""] * b,
        history_ids=hist,
        history_labels=torch.zeros(hist.shape),
        user_ids=torch.arange(b),
        need_index=torch.zeros(b, dtype=torch.long),
        candidate_features=features if features is not None else torch.zeros(b, k, 6),
    )


def _features(column: str, values: list[list[float]]) -> torch.Tensor:
    v = torch.tensor(values)
    f = torch.rand(*v.shape, len(FEATURE_NAMES), generator=torch.Generator().manual_seed(0))
    f[..., FEATURE_NAMES.index(column)] = v
    return f


def _synthetic_interactions(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user consumes their group (liked, label 5) and 2 random items ≥ 10 (label 2)."""
    rng = np.random.default_rng(seed)
    users, items, labels = [], [], []
    for u in range(NUM_USERS):
        group = GROUPS[u % 2]
        seq = list(group) + rng.choice(np.arange(10, NUM_ITEMS), 2, replace=False).tolist()
        rng.shuffle(seq)
        users += [u] * len(seq)
        items += seq
        labels += [5.0 if i in group else 2.0 for i in seq]
    return np.array(users), np.array(items), np.array(labels)


def _datamodule() -> SimpleNamespace:
    users, items, labels = _synthetic_interactions()
    data = FeedbackData(
        user=users,
        item=items,
        label=labels,
        num_users=NUM_USERS,
        num_items=NUM_ITEMS,
        item_categories=np.zeros((NUM_ITEMS, 1), dtype=bool),
        needs={},
    )
    info = DataInfo(NUM_ITEMS, NUM_USERS, len(FEATURE_NAMES), ("maximize_interest",), FEATURE_NAMES)
    return SimpleNamespace(feedback_training_data=lambda: data, info=info)


@pytest.fixture(scope="module")
def bpr() -> BPRMFPolicy:
    policy = BPRMFPolicy(
        num_items=NUM_ITEMS, num_users=NUM_USERS, dim=8, epochs=30, batch_size=128, lr=0.05
    )
    policy.prepare(_datamodule())
    return policy


@pytest.fixture(scope="module")
def sasrec() -> SASRecPolicy:
    policy = SASRecPolicy(num_items=NUM_ITEMS, max_len=8, dim=16, epochs=40, batch_size=40, lr=5e-3)
    policy.prepare(_datamodule())
    return policy


# ---------------------------------------------------------------- known rankings
@pytest.mark.parametrize(
    ("cls", "column"),
    [
        (PopularityPolicy, "popularity"),
        (RecentPopularityPolicy, "recent_popularity"),
        (ItemMeanPolicy, "mean_label"),
    ],
)
def test_feature_baselines_rank_by_their_column(cls: type, column: str) -> None:
    values = [[0.2, 0.9, 0.5, 0.9, 0.0], [0.1, 0.3, 0.2, 0.6, 0.4]]
    batch = _batch([[10, 11, 12, 13, 14], [5, 6, 7, 8, 9]], _features(column, values))
    policy = cls()
    # ties (0.9, 0.9) keep the prompt order, like the feature:NAME reference ranking
    assert policy.rank(batch).tolist() == [[1, 3, 2, 0, 4], [3, 4, 1, 2, 0]]
    assert torch.equal(
        policy.sample(batch, 2, temperature=0.0).permutations[:, 1], policy.rank(batch)
    )


def test_feature_column_is_resolved_from_the_data_module() -> None:
    policy = FeaturePolicy(feature="b")
    with pytest.raises(ValueError, match="unknown candidate feature 'b'"):
        policy.scores(_batch([[1, 2]]))  # not a built-in column
    info = SimpleNamespace(info=DataInfo(5, 1, 2, ("maximize_interest",), ("a", "b")))
    policy.prepare(info)
    with pytest.raises(ValueError, match="unknown candidate feature 'nope'"):
        FeaturePolicy(feature="nope").prepare(info)
    features = torch.tensor([[[0.9, 0.1], [0.0, 0.8], [0.5, 0.5]]])
    assert policy.rank(_batch([[1, 2, 3]], features)).tolist() == [[1, 2, 0]]


def test_popularity_from_train_counts() -> None:
    policy = PopularityPolicy(source="train_counts")
    with pytest.raises(RuntimeError, match="not prepared"):
        policy.scores(_batch([[0, 1]]))
    policy.prepare(_datamodule())
    # every group item has 40 interactions, the others 80 * 2 / 20 = 8 on average
    scores = policy.scores(_batch([[17, 0, 20, 6]]))
    torch.testing.assert_close(scores[0, 1], torch.tensor(np.log1p(40.0), dtype=torch.float32))
    assert policy.rank(_batch([[17, 0, 20, 6]]))[0, :2].tolist() == [1, 3]


# ---------------------------------------------------------------- Plackett–Luce policy
def _policies(bpr: BPRMFPolicy, sasrec: SASRecPolicy) -> list[ScoringPolicy]:
    return [PopularityPolicy(), ItemMeanPolicy(temperature=0.5), bpr, sasrec]


def test_sample_and_log_probs_agree_and_permutations_are_valid(
    bpr: BPRMFPolicy, sasrec: SASRecPolicy
) -> None:
    batch = make_batch(batch_size=3, num_candidates=6, num_features=6, seed=1)
    batch.candidate_ids %= NUM_ITEMS
    batch.history_ids = torch.where(batch.history_ids >= 0, batch.history_ids % NUM_ITEMS, -1)
    for policy in _policies(bpr, sasrec):
        torch.manual_seed(0)
        rollout = policy.sample(batch, group_size=5, temperature=0.7)
        assert torch.equal(rollout.permutations.sort(-1).values, torch.arange(6).expand(3, 5, 6))
        logprobs, steps = policy.log_probs(batch, rollout.permutations)
        torch.testing.assert_close(logprobs, rollout.logprobs, atol=1e-6, rtol=0)
        torch.testing.assert_close(steps, rollout.step_logprobs, atol=1e-6, rtol=0)
        assert torch.all(rollout.logprobs[..., -1] == 0)
        torch.testing.assert_close(steps.exp().sum(-1), torch.ones(3, 5, 6), atol=1e-5, rtol=0)
        ref, _ = policy.reference_log_probs(batch, rollout.permutations)
        torch.testing.assert_close(ref, logprobs)
        assert policy.trainable_parameters() == []
        # the first step is the softmax of score / temperature
        first = torch.log_softmax(policy.scores(batch) / policy.temperature, -1)
        torch.testing.assert_close(steps[:, 0, 0], first, atol=1e-5, rtol=0)


def test_sampling_frequencies_follow_the_softmax() -> None:
    batch = _batch([[0, 1, 2]], _features("popularity", [[0.0, 0.1, 0.2]]))
    policy = PopularityPolicy(temperature=0.1)  # first-step probabilities ∝ e^0, e^1, e^2
    torch.manual_seed(0)
    first = policy.sample(batch, group_size=20_000).permutations[0, :, 0]
    freq = torch.bincount(first, minlength=3).float() / 20_000
    torch.testing.assert_close(
        freq, torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0), atol=0.01, rtol=0
    )


def test_trainable_residual_moves_the_policy_not_the_reference() -> None:
    batch = _batch([[0, 1, 2, 3]], _features("popularity", [[0.4, 0.3, 0.2, 0.1]]))
    policy = PopularityPolicy(trainable=True, num_items=10)
    (param,) = policy.trainable_parameters()
    assert param.shape == (10, 1)
    perm = torch.tensor([[[3, 2, 1, 0]]])
    before, _ = policy.log_probs(batch, perm)
    torch.testing.assert_close(before, policy.reference_log_probs(batch, perm)[0])
    optimizer = torch.optim.SGD([param], lr=1.0)
    (-before.sum()).backward()
    optimizer.step()
    after, _ = policy.log_probs(batch, perm)
    assert after.sum() > before.sum() + 1e-3
    torch.testing.assert_close(policy.reference_log_probs(batch, perm)[0], before.detach())


# ---------------------------------------------------------------- learned baselines
# history from group 0, then from group 1; candidates mix both groups with other items
GROUP_TASKS = {
    "candidates": [[10, 2, 15, 6, 0, 8, 20, 4]] * 2,
    "history": [[1, 3], [5, 7]],
}


def test_bpr_ranks_the_users_group_first(bpr: BPRMFPolicy) -> None:
    ranking = bpr.rank(_batch(**GROUP_TASKS))
    assert ranking[0, :3].sort().values.tolist() == [1, 4, 7]  # items 2, 0, 4
    assert ranking[1, :2].sort().values.tolist() == [3, 5]  # items 6, 8
    assert bpr.is_fitted and float(bpr.alpha) > 0


def test_bpr_prepare_is_idempotent_and_folds_in_history(bpr: BPRMFPolicy) -> None:
    weights = bpr.item_factors.weight.clone()
    bpr.prepare(_datamodule())
    assert torch.equal(bpr.item_factors.weight, weights)
    vectors = bpr.user_vectors(torch.tensor([[0, 1, -1], [-1, -1, -1]]))
    expected = bpr.alpha * (weights[[0, 1]].mean(0) - weights.mean(0))
    torch.testing.assert_close(vectors[0], expected)
    assert torch.equal(vectors[1], torch.zeros(8))
    with pytest.raises(RuntimeError, match="not fitted"):
        BPRMFPolicy(num_items=5).scores(_batch([[0, 1]]))


def test_training_windows_are_right_aligned() -> None:
    windows = training_windows(np.array([0, 0, 0, 0, 1]), np.array([1, 2, 3, 4, 5]), max_len=2)
    # ids shifted by one, 0 = left padding; user 1 has a single item: nothing to predict
    assert windows.tolist() == [[3, 4, 5], [0, 2, 3]]


def test_sasrec_ranks_the_users_group_first(sasrec: SASRecPolicy) -> None:
    ranking = sasrec.rank(_batch(**GROUP_TASKS))
    assert ranking[0, :3].sort().values.tolist() == [1, 4, 7]
    assert ranking[1, :2].sort().values.tolist() == [3, 5]


def test_sasrec_learns_a_sequential_pattern() -> None:
    # every user walks the chain 10 → 11 → ... → 19 from a random start
    rng = np.random.default_rng(0)
    users, items = [], []
    for u in range(80):
        start = int(rng.integers(0, 5))
        users += [u] * 6
        items += [10 + (start + i) % 10 for i in range(6)]
    policy = SASRecPolicy(num_items=NUM_ITEMS, max_len=6, dim=16, epochs=40, batch_size=32)
    policy.fit(np.array(users), np.array(items))
    # candidates are never in the history (as in real tasks)
    batch = _batch([[18, 16, 14, 11, 17], [18, 16, 11, 19, 17]], history=[[12, 13], [14, 15]])
    assert policy.rank(batch)[:, 0].tolist() == [2, 1]  # 14 after 13, 16 after 15


# ---------------------------------------------------------------- registry and end to end
def test_every_baseline_is_registered() -> None:
    info = DataInfo(NUM_ITEMS, NUM_USERS, 6, ("maximize_interest",), FEATURE_NAMES)
    expected = {
        "feature": FeaturePolicy,
        "popularity": PopularityPolicy,
        "recent_popularity": RecentPopularityPolicy,
        "item_mean": ItemMeanPolicy,
        "bpr_mf": BPRMFPolicy,
        "sasrec": SASRecPolicy,
    }
    for name, cls in expected.items():
        policy = registries.policy.build({"name": name}, **info.context())
        assert type(policy) is cls


@pytest.fixture(scope="module")
def movielens():
    from flexrec.data.datamodule import FlexRecDataModule

    data = FlexRecDataModule(
        "ml-latest-small", max_train_tasks=16, max_eval_tasks=40, with_text=False
    )
    data.setup()
    return data


def _validate(module, data) -> dict[str, float]:
    trainer = L.Trainer(
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
    )
    (metrics,) = trainer.validate(module, data, verbose=False)
    return metrics


def test_popularity_policy_equals_the_popularity_reference_end_to_end(movielens) -> None:
    from flexrec.module import FlexRecModule

    module = FlexRecModule(policy={"name": "popularity"}, references=("feature:popularity",))
    metrics = _validate(module, movielens)
    for metric in ("ndcg@5", "ndcg@10", "recall@5", "mrr@10"):
        ours = metrics[f"val/{metric}/maximize_interest"]
        assert ours == metrics[f"val_feature_popularity/{metric}/maximize_interest"]
    assert 0.3 < metrics["val/ndcg@5/maximize_interest"] < 0.9


def test_module_setup_prepares_a_learned_baseline(movielens) -> None:
    from flexrec.module import FlexRecModule

    spec = {"name": "bpr_mf", "args": {"epochs": 1, "dim": 8}}
    module = FlexRecModule(policy=spec, references=("oracle",))
    metrics = _validate(module, movielens)
    assert module.policy.is_fitted
    # fitted on the train users' visible interactions only
    assert module.policy.item_factors.num_embeddings == movielens.info.num_items
    assert 0.0 < metrics["val/ndcg@5/maximize_interest"] <= 1.0


def test_a_trainable_baseline_runs_in_the_rl_loop() -> None:
    from flexrec.module import FlexRecModule
    from flexrec.testing.synthetic import SyntheticDataModule

    data = SyntheticDataModule(num_train=32, num_val=16, batch_size=16, seed=0)
    spec = {"name": "feature", "args": {"feature": "f0", "trainable": True}}
    module = FlexRecModule(policy=spec, group_size=4, lr=0.05, references=())
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
    )
    trainer.fit(module, data)
    residual = module.policy.residual.weight
    assert residual.shape == (data.info.num_items, 1)
    assert residual.abs().max() > 1e-3  # two RL steps moved the residual away from 0
    # pi_ref is still the plain f0 baseline
    fresh = FeaturePolicy(feature="f0")
    fresh.prepare(data)
    perms = module.policy.sample(data.val, 3).permutations
    reference, _ = module.policy.reference_log_probs(data.val, perms)
    torch.testing.assert_close(reference, fresh.log_probs(data.val, perms)[0])
    assert not torch.allclose(module.policy.log_probs(data.val, perms)[0], reference)
