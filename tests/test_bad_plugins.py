"""Misbehaving plug-ins: the contract suites say what they expected and found, and training stops
with one line naming the plug-in (exit status 2) instead of training to NaN or failing deep inside.

The bad components below are registered the way an unpackaged plug-in is: this module holds
``flexrec_register_*`` hook implementations and is named in ``FLEXREC_PLUGINS`` (the
``bad_plugins`` fixture). The commands run in-process through ``flexrec.cli.main`` on the
synthetic task or the embedded MovieLens latest-small, with real training (native policy).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch import Tensor

from flexrec.cli import main
from flexrec.critic.knn import ItemKNN
from flexrec.data.dataset import MOVIELENS_SCALE
from flexrec.errors import DataError
from flexrec.estimators.base import AdvantageEstimator
from flexrec.needs.base import NeedContext
from flexrec.needs.builtin import MaximizeInterest
from flexrec.plugin.manager import reset_plugin_manager
from flexrec.plugin.spec import hookimpl
from flexrec.registry import registries
from flexrec.rewards.base import Reward
from flexrec.rewards.functional import swap_rewards
from flexrec.testing.contracts import EstimatorContract, NeedContract, RewardContract
from flexrec.testing.synthetic import SyntheticDataModule
from flexrec.types import RankingBatch, RewardOutput

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = REPO / "configs" / "synthetic.yaml"
QUICKSTART = REPO / "configs" / "quickstart.yaml"
QUICK = (
    "--trainer.max_epochs=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
)
SYNTHETIC_SMALL = (
    "--data.init_args.num_train=32",
    "--data.init_args.num_val=16",
    "--data.init_args.batch_size=16",
    *QUICK,
)
MOVIELENS_SMALL = (
    "--data.init_args.max_train_tasks=32",
    "--data.init_args.max_eval_tasks=16",
    "--data.init_args.with_text=false",
    *QUICK,
)
# what Lightning itself logs to stderr when it builds a trainer, before a fault during the run
LIGHTNING_NOTICES = ("GPU available", "TPU available", "HPU available", "💡 Tip")


# ---------------------------------------------------------------- the bad plug-ins


class FlatReward(Reward):
    """One reward per rollout ``[B, G]`` instead of one per placed item."""

    name = "flat_reward"

    def item_rewards(self, placed_gains: Tensor, batch: RankingBatch | None = None) -> Tensor:
        return swap_rewards(placed_gains, self.cutoff).sum(-1)


class NaNReward(Reward):
    """The swap reward, but NaN for every item of a rollout whose first item has a gain below
    1/2 (a bug in a reward formula)."""

    name = "nan_reward"

    def item_rewards(self, placed_gains: Tensor, batch: RankingBatch | None = None) -> Tensor:
        swap = swap_rewards(placed_gains, self.cutoff)
        low = (placed_gains[..., :1] < 0.5).expand_as(swap)
        return torch.where(low, torch.full_like(swap, math.nan), swap)


class FlatEstimator(AdvantageEstimator):
    """One advantage per rollout ``[B, G]``."""

    name = "flat_estimator"

    def forward(self, reward: RewardOutput) -> Tensor:
        total = reward.rewards.sum(-1)
        return total - total.mean(1, keepdim=True)


class CredulousEstimator(AdvantageEstimator):
    """Group-relative advantages that pass NaN rewards on instead of rejecting them."""

    name = "credulous"

    def forward(self, reward: RewardOutput) -> Tensor:
        return reward.rewards - reward.rewards.mean(1, keepdim=True)


class NaNNeed(MaximizeInterest):
    """Interest, but NaN for the best labels (a bug in a gain formula)."""

    name = "nan_gains"

    def gains(self, labels: Any, context: NeedContext | None = None) -> Tensor:
        labels = torch.as_tensor(labels)
        interest = self.interest(labels)
        return torch.where(labels >= 4.5, torch.full_like(interest, math.nan), interest)


class FlatNeed(MaximizeInterest):
    """One gain per task instead of one per candidate."""

    name = "flat_gains"

    def gains(self, labels: Any, context: NeedContext | None = None) -> Tensor:
        return self.interest(labels).mean(-1)


class DoubledNeed(MaximizeInterest):
    """Gains in [0, 2]."""

    name = "doubled_gains"

    def gains(self, labels: Any, context: NeedContext | None = None) -> Tensor:
        return 2.0 * self.interest(labels)


class FuzzyRelevanceNeed(MaximizeInterest):
    """Relevance as a float score instead of a bool mask."""

    name = "fuzzy_relevance"

    def relevant(self, labels: Any, context: NeedContext | None = None) -> Tensor:
        return self.interest(labels)


class TerseNeed(MaximizeInterest):
    """Two paraphrases, one of them held out."""

    name = "terse"
    instructions = ("Rank by what I like.", "Best first.")
    held_out = (1,)


class NothingToTrainOnNeed(MaximizeInterest):
    """Every paraphrase held out: training tasks would have none."""

    name = "all_held_out"
    held_out = (0, 1, 2, 3)


class NaNFillFeedback(ItemKNN):
    """Item KNN whose filled gains are NaN for every hidden candidate."""

    name = "nan_fill"

    def fill(self, batch: RankingBatch) -> tuple[Tensor, Tensor]:
        mean, variance = super().fill(batch)
        return torch.where(batch.observed, mean, torch.full_like(mean, math.nan)), variance


@hookimpl
def flexrec_register_rewards() -> list[type]:
    return [FlatReward, NaNReward]


@hookimpl
def flexrec_register_advantage_estimators() -> list[type]:
    return [FlatEstimator, CredulousEstimator]


@hookimpl
def flexrec_register_needs() -> list[type]:
    return [NaNNeed, FlatNeed, DoubledNeed, FuzzyRelevanceNeed, TerseNeed, NothingToTrainOnNeed]


@hookimpl
def flexrec_register_feedback_models() -> list[type]:
    return [NaNFillFeedback]


@pytest.fixture
def bad_plugins(flexrec_fresh_plugins: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """This module is a plug-in for the test (``FLEXREC_PLUGINS``, as an unpackaged plug-in)."""
    monkeypatch.setenv("FLEXREC_PLUGINS", __name__)
    reset_plugin_manager()
    assert registries.reward.get("flat_reward") is FlatReward


def _one_line_error(capsys: pytest.CaptureFixture[str], status: int, message: str) -> str:
    assert status == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(LIGHTNING_NOTICES)]
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith("flexrec: error: ") and message in lines[0], lines[0]
    return lines[0]


def _fit(tmp_path: Path, config: Path, *args: str) -> int:
    small = SYNTHETIC_SMALL if config == SYNTHETIC else MOVIELENS_SMALL
    root = tmp_path / "run"
    return main(["fit", f"--config={config}", *small, f"--trainer.default_root_dir={root}", *args])


def _nothing_written(tmp_path: Path) -> None:
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("run.json"))


# ---------------------------------------------------------------- 1. the contract suites


def _need(name: str) -> Any:
    return registries.need.build(name).bind(MOVIELENS_SCALE, NeedContract.trend_window)


@pytest.mark.usefixtures("bad_plugins")
@pytest.mark.parametrize(
    ("name", "check", "message"),
    [
        (
            "nan_gains",
            "test_gains_are_finite_and_in_the_unit_interval",
            "gains of labels across the scale, beyond it and NaN: expected finite values, "
            "found 9 non-finite of 32 (nan at (0, 5))",
        ),
        (
            "flat_gains",
            "test_gains_are_finite_and_in_the_unit_interval",
            "gains(labels [B, K], context): expected shape (4, 8), found (4,)",
        ),
        (
            "doubled_gains",
            "test_gains_are_finite_and_in_the_unit_interval",
            "gains of labels across the scale, beyond it and NaN: expected values in [0.0, 1.0], "
            "found 2 at (0, 5)",
        ),
        (
            "nan_gains",
            "test_sampled_labels_broadcast_over_the_context",
            "gains of sampled labels: expected finite values",
        ),
        (
            "flat_gains",
            "test_candidate_order_does_not_matter",
            "gains(labels [B, K], context): expected shape (4, 8), found (4,)",
        ),
        (
            "fuzzy_relevance",
            "test_relevant_is_a_boolean_mask",
            "relevant dtype: expected torch.bool, found torch.float32",
        ),
        (
            "terse",
            "test_has_three_instruction_paraphrases",
            "instructions: expected at least 3 paraphrases, found 2",
        ),
        (
            "all_held_out",
            "test_held_out_paraphrases_leave_some_for_training",
            "held_out: expected at least one paraphrase left for training, found (0, 1, 2, 3)",
        ),
    ],
)
def test_need_contract_failures_say_what_was_expected_and_found(
    name: str, check: str, message: str
) -> None:
    with pytest.raises(AssertionError) as failure:
        getattr(NeedContract(), check)(_need(name))
    assert str(failure.value) == message or str(failure.value).startswith(message), failure.value


@pytest.mark.usefixtures("bad_plugins")
def test_the_need_checks_pass_the_need_the_bad_ones_derive_from() -> None:
    contract, good = NeedContract(), _need("maximize_interest")
    for check in (
        "test_gains_are_finite_and_in_the_unit_interval",
        "test_relevant_is_a_boolean_mask",
        "test_sampled_labels_broadcast_over_the_context",
        "test_candidate_order_does_not_matter",
        "test_has_three_instruction_paraphrases",
        "test_held_out_paraphrases_leave_some_for_training",
    ):
        getattr(contract, check)(good)


@pytest.mark.usefixtures("bad_plugins")
def test_reward_contract_failures_say_what_was_expected_and_found() -> None:
    contract = RewardContract()
    with pytest.raises(AssertionError) as failure:
        contract.test_shapes_and_finite(registries.reward.build("flat_reward"))
    assert str(failure.value) == (
        "RewardOutput.rewards [B, G, K]: expected shape (3, 4, 6), found (3, 4)"
    )
    with pytest.raises(AssertionError) as failure:
        contract.test_shapes_and_finite(registries.reward.build("nan_reward"))
    assert str(failure.value).startswith(
        "RewardOutput.rewards: expected finite values, found 42 non-finite of 72 (nan at (0, 0, 0))"
    ), failure.value
    contract.test_shapes_and_finite(registries.reward.build("swap"))  # and a good one passes


@pytest.mark.usefixtures("bad_plugins")
def test_estimator_contract_failures_say_what_was_expected_and_found() -> None:
    contract = EstimatorContract()
    with pytest.raises(AssertionError) as failure:
        contract.test_shapes_and_finite(registries.estimator.build("flat_estimator"))
    assert str(failure.value) == (
        "advantages (with variances) [B, G, K]: expected shape (3, 4, 5), found (3, 4)"
    )
    with pytest.raises(AssertionError) as failure:
        contract.test_non_finite_reward_is_rejected(
            registries.estimator.build("credulous"), math.nan
        )
    assert str(failure.value) == (
        "estimator(rewards with a nan): expected a ValueError, found advantages returned (Tensor)"
    )
    contract.test_non_finite_reward_is_rejected(registries.estimator.build("rloo"), math.nan)


# ---------------------------------------------------------------- 2. training stops, naming them


@pytest.mark.usefixtures("bad_plugins")
@pytest.mark.parametrize(
    ("need", "message"),
    [
        (
            "nan_gains",
            "need 'nan_gains' gave gain nan to task 0, candidate ",
        ),
        (
            "flat_gains",
            "need 'flat_gains' returned gains of shape (",
        ),
        ("doubled_gains", "need 'doubled_gains' gave gain 2 to task 0, candidate "),
        ("fuzzy_relevance", "need 'fuzzy_relevance' returned relevant of dtype torch.float32"),
    ],
)
def test_a_bad_need_stops_fit_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], need: str, message: str
) -> None:
    status = _fit(tmp_path, QUICKSTART, f"--data.init_args.needs=[{need}]")
    line = _one_line_error(capsys, status, message)
    assert "of the train split" in line or "expected bool" in line, line
    _nothing_written(tmp_path)


@pytest.mark.usefixtures("bad_plugins")
@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "--model.reward=flat_reward",
            "reward 'flat_reward' returned rewards of shape (16, 8), expected (16, 8, 8) "
            "([B, G, K]: one per placed item of the rollouts)",
        ),
        (
            "--model.reward=nan_reward",
            "reward 'nan_reward' returned a non-finite reward (nan at task ",
        ),
        (
            "--model.estimator=flat_estimator",
            "estimator 'flat_estimator' returned advantages of shape (16, 8), expected "
            "(16, 8, 8) ([B, G, K], like the rewards)",
        ),
    ],
)
def test_a_bad_reward_or_estimator_stops_fit_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, message: str
) -> None:
    _one_line_error(capsys, _fit(tmp_path, SYNTHETIC, override), message)
    _nothing_written(tmp_path)


@pytest.mark.usefixtures("bad_plugins")
def test_non_finite_filled_gains_stop_fit_naming_the_need_and_the_feedback_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = _fit(
        tmp_path, QUICKSTART, "--data.init_args.sparse_p=0.5", "--model.feedback=nan_fill"
    )
    _one_line_error(
        capsys,
        status,
        "need 'maximize_interest': non-finite gain (nan) from the feedback model 'nan_fill' in "
        "training batch 0 (task 0, candidate ",
    )
    _nothing_written(tmp_path)


@pytest.mark.usefixtures("flexrec_fresh_plugins")
def test_a_need_from_the_plugins_config_key_is_found_and_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``model.plugins`` is loaded before the data module looks up its needs."""
    status = _fit(
        tmp_path, QUICKSTART, f"--model.plugins=[{__name__}]", "--data.init_args.needs=[nan_gains]"
    )
    _one_line_error(capsys, status, "need 'nan_gains' gave gain nan to task 0, candidate ")
    _nothing_written(tmp_path)


class _NaNGainsData(SyntheticDataModule):
    """The synthetic task with one NaN gain in the training split."""

    def __init__(self) -> None:
        super().__init__(num_train=32, num_val=16, batch_size=16)
        self.train.gains[5, 3] = math.nan


def test_non_finite_gains_of_a_data_module_stop_training_at_that_batch() -> None:
    from flexrec.module import FlexRecModule

    data = _NaNGainsData()
    model = FlexRecModule(policy={"name": "native", "args": {"dim": 8}}, group_size=2)
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    order = list(iter(data.train_dataloader().sampler))
    batch, task = divmod(order.index(5), 16)
    need = data.train.need[5]
    with pytest.raises(DataError) as failure:
        trainer.fit(model, datamodule=data)
    assert str(failure.value) == (
        f"need {need!r}: non-finite gain (nan) from the data module in training batch {batch} "
        f"(task {task}, candidate 3); training stopped"
    )
    assert trainer.global_step == batch  # the batches before it trained, none after
