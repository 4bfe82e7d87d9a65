"""The contract every feedback model (``feedback`` registry: critics, imputers) must satisfy.

Import it from :mod:`flexrec.testing.contracts`. It runs on :func:`flexrec.testing.fakes.feedback_case`:
a few hundred training labels of a small user × item matrix and a batch of sparse tasks.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from flexrec.registry import registries
from flexrec.testing import fakes
from flexrec.testing.checks import (
    expect,
    expect_close,
    expect_equal,
    expect_finite,
    expect_in_range,
    expect_shape,
)
from flexrec.testing.fakes import FeedbackCase

__all__ = ["FeedbackModelContract"]


class FeedbackModelContract:
    """Properties every feedback model must have.

    A feedback model learns label moments from observed labels (:meth:`fit`), predicts a label
    mean and variance per (user, item) pair (:meth:`predict_labels`) and fills a batch's
    unobserved gains (:meth:`predict`, :meth:`fill`) while observed gains pass through with
    variance 0.

    Set ``spec`` (or override the ``feedback_spec`` fixture). Set ``learns = False`` for a model
    that is not meant to beat the global mean label (a deliberately constant baseline).
    """

    spec: ClassVar[Any] = None
    learns: ClassVar[bool] = True

    @pytest.fixture
    def feedback_spec(self) -> Any:
        """The spec under test (override, or set ``spec``)."""
        if self.spec is None:
            pytest.skip("set `spec` or override the `feedback_spec` fixture")
        return self.spec

    @pytest.fixture
    def unfitted_feedback_model(self, feedback_spec: Any) -> Any:
        """The feedback model built through the registry, not fitted yet."""
        return registries.feedback.build(feedback_spec)

    @pytest.fixture
    def feedback_case(self) -> FeedbackCase:
        """The data the model is fitted and checked on."""
        return fakes.feedback_case()

    @pytest.fixture
    def feedback_model(self, unfitted_feedback_model: Any, feedback_case: FeedbackCase) -> Any:
        """The feedback model fitted on ``feedback_case.train``."""
        return unfitted_feedback_model.fit(feedback_case.train)

    # ------------------------------------------------------------------ fit
    def test_fit_returns_the_fitted_model(
        self, unfitted_feedback_model: Any, feedback_case: FeedbackCase
    ) -> None:
        model = unfitted_feedback_model
        expect(not model.is_fitted, "is_fitted before fit", "False", model.is_fitted)
        with pytest.raises(RuntimeError, match="not fitted"):
            unfitted_feedback_model.predict(feedback_case.batch)
        fitted = model.fit(feedback_case.train)
        expect(fitted is model, "fit(data)", "the model itself", repr(fitted))
        expect(model.is_fitted, "is_fitted after fit", "True", model.is_fitted)

    def test_fit_leaves_the_data_unchanged(
        self, unfitted_feedback_model: Any, feedback_case: FeedbackCase
    ) -> None:
        data = feedback_case.train
        before = {name: getattr(data, name).copy() for name in ("user", "item", "label")}
        categories = data.item_categories.copy()
        unfitted_feedback_model.fit(data)
        for name, values in before.items():
            expect_equal(f"training data {name!r} after fit", getattr(data, name), values)
        expect_equal("training data item_categories after fit", data.item_categories, categories)

    def test_deterministic_given_its_seed(
        self, feedback_spec: Any, feedback_case: FeedbackCase
    ) -> None:
        """Two fits on the same data predict the same, whatever the global random state."""
        users, items = _all_pairs(feedback_case)
        predictions = []
        for global_seed in (1, 2):
            torch.manual_seed(global_seed)
            model = registries.feedback.build(feedback_spec).fit(feedback_case.train)
            predictions.append(model.predict_labels(users, items))
        for first, second in zip(*predictions, strict=True):
            expect_equal("predict_labels of a second fit (another global seed)", second, first)

    # ------------------------------------------------------------------ predict_labels
    def test_predict_labels_shapes_finite_and_variance_non_negative(
        self, feedback_model: Any, feedback_case: FeedbackCase
    ) -> None:
        users, items = _all_pairs(feedback_case)  # every pair, cold user and cold item included
        for shape in ((users.size,), (users.shape[0] // 8, 8)):
            mean, var = feedback_model.predict_labels(users.reshape(shape), items.reshape(shape))
            expect_shape("predict_labels mean", np.asarray(mean), shape)
            expect_shape("predict_labels variance", np.asarray(var), shape)
            expect_finite("predict_labels mean", np.asarray(mean))
            expect_in_range("predict_labels variance", np.asarray(var), 0.0, np.inf, tolerance=0)

    def test_predict_labels_is_repeatable_and_pairwise(
        self, feedback_model: Any, feedback_case: FeedbackCase
    ) -> None:
        """Predicting twice, or a pair alone, gives what a pair gets among others."""
        users, items = _all_pairs(feedback_case)
        mean, var = feedback_model.predict_labels(users, items)
        again = feedback_model.predict_labels(users, items)
        expect_equal("predict_labels mean, predicted again", again[0], mean)
        expect_equal("predict_labels variance, predicted again", again[1], var)
        picks = np.array([0, 17, len(users) - 1])
        alone_mean, alone_var = feedback_model.predict_labels(users[picks], items[picks])
        expect_close(
            "predict_labels mean of 3 pairs alone",
            torch.as_tensor(alone_mean),
            torch.as_tensor(mean[picks]),
            rtol=1e-5,
            atol=1e-6,
        )
        expect_close(
            "predict_labels variance of 3 pairs alone",
            torch.as_tensor(alone_var),
            torch.as_tensor(var[picks]),
            rtol=1e-5,
            atol=1e-6,
        )

    def test_learns_from_the_labels(self, feedback_model: Any, feedback_case: FeedbackCase) -> None:
        """On held-out pairs it beats predicting the global mean training label."""
        if not self.learns:
            pytest.skip("this model is declared not to learn (learns = False)")
        held = feedback_case.heldout
        mean, _ = feedback_model.predict_labels(held.user, held.item)
        rmse = float(np.sqrt(np.mean((np.asarray(mean) - held.label) ** 2)))
        constant = float(np.sqrt(np.mean((feedback_case.train.label.mean() - held.label) ** 2)))
        expect(
            rmse < 0.9 * constant,
            "held-out RMSE",
            f"< {0.9 * constant:.4f} (0.9 x the RMSE {constant:.4f} of the mean training label)",
            f"{rmse:.4f}",
        )

    # ------------------------------------------------------------------ predict / fill
    def test_observed_gains_pass_through_with_zero_variance(
        self, feedback_model: Any, feedback_case: FeedbackCase
    ) -> None:
        batch = feedback_case.batch
        for method in (feedback_model.predict, feedback_model.fill):
            mean, var = method(batch)
            what = f"{method.__name__}(batch)"
            expect_shape(f"{what} mean [B, K]", mean, batch.gains.shape)
            expect_shape(f"{what} variance [B, K]", var, batch.gains.shape)
            for part, value in (("mean", mean), ("variance", var)):
                expect(value.is_floating_point(), f"{what} {part} dtype", "floating", value.dtype)
                expect(
                    value.device == batch.gains.device,
                    f"{what} {part} device",
                    f"the batch's ({batch.gains.device})",
                    value.device,
                )
            expect_equal(
                f"{what} mean of observed candidates",
                mean[batch.observed],
                batch.gains[batch.observed].to(mean.dtype),
            )
            expect_equal(
                f"{what} variance of observed candidates",
                var[batch.observed],
                torch.zeros_like(var[batch.observed]),
            )

    def test_hidden_gains_are_finite_gain_moments(
        self, feedback_model: Any, feedback_case: FeedbackCase
    ) -> None:
        """Every need of the case has gains in [0, 1]: so do their means, variances are ≤ 1/4."""
        batch = feedback_case.batch
        mean, var = feedback_model.fill(batch)
        hidden = ~batch.observed
        expect_finite("fill(batch) mean", mean)
        expect_in_range("fill(batch) mean of hidden candidates", mean[hidden], 0.0, 1.0, 0.0)
        expect_in_range("fill(batch) variance", var, 0.0, 0.25, tolerance=1e-6)

    def test_tasks_are_independent(self, feedback_model: Any, feedback_case: FeedbackCase) -> None:
        batch = feedback_case.batch
        mean, var = feedback_model.fill(batch)
        for b in range(batch.batch_size):
            alone_mean, alone_var = feedback_model.fill(batch.select([b]))
            expect_close(f"fill mean of task {b} alone", alone_mean, mean[b : b + 1])
            expect_close(f"fill variance of task {b} alone", alone_var, var[b : b + 1])

    def test_candidate_order_does_not_matter(
        self, feedback_model: Any, feedback_case: FeedbackCase
    ) -> None:
        """Shuffling the candidates of every task shuffles the filled gains the same way."""
        batch = feedback_case.batch
        order = torch.randperm(batch.num_candidates, generator=torch.Generator().manual_seed(5))
        shuffled = replace(
            batch,
            candidate_ids=batch.candidate_ids[:, order],
            gains=batch.gains[:, order],
            observed=batch.observed[:, order],
            relevant=batch.relevant[:, order],
            labels=None if batch.labels is None else batch.labels[:, order],
            candidate_features=(
                None if batch.candidate_features is None else batch.candidate_features[:, order]
            ),
        )
        mean, var = feedback_model.fill(batch)
        moved_mean, moved_var = feedback_model.fill(shuffled)
        expect_close("fill mean of the shuffled candidates", moved_mean, mean[:, order])
        expect_close("fill variance of the shuffled candidates", moved_var, var[:, order])

    def test_a_need_it_was_not_fitted_with_is_named(
        self, feedback_model: Any, feedback_case: FeedbackCase
    ) -> None:
        batch = feedback_case.batch
        unknown = replace(batch, need=["no_such_need", *batch.need[1:]])
        with pytest.raises(ValueError, match="no_such_need"):
            feedback_model.fill(unknown)

    def test_has_registered_name(self, unfitted_feedback_model: Any) -> None:
        cls = type(unfitted_feedback_model)
        found = registries.feedback.get(cls.name) if cls.name in registries.feedback else None
        expect(found is cls, f"feedback registry entry {cls.name!r}", cls.__qualname__, found)


def _all_pairs(case: FeedbackCase) -> tuple[np.ndarray, np.ndarray]:
    """Every (user, item) index pair of the case, ``[U · I]`` each."""
    num_users, num_items = case.truth.shape
    users, items = np.meshgrid(np.arange(num_users), np.arange(num_items), indexing="ij")
    return users.ravel(), items.ravel()
