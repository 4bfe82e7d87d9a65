"""Feedback models (METHOD.md §4): fill unobserved gains with a mean and a variance.

Every feedback model predicts the **raw label** of a (user, item) pair as a Gaussian ``(μ, σ²)``
(:meth:`FeedbackModel.predict_labels`); labels do not depend on the need, so one fitted model
serves every need of a joint run. :meth:`FeedbackModel.predict` turns label moments into the moments
of each task's need gain by deterministic quadrature (``n`` standard-normal quantiles pushed through
the need's gain with the task's novelty / trend features), so any need — also a plug-in's — is
supported. Observed candidates pass through: their true gain with variance 0.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from flexrec.data.features import NOVELTY, TREND
from flexrec.data.feedback import FeedbackData
from flexrec.data.tasks import TaskSet
from flexrec.needs.base import Need, NeedContext
from flexrec.types import RankingBatch

__all__ = ["FeedbackModel", "calibration", "imputation_metrics"]

_NODES = 33


class FeedbackModel:
    """Base class of feedback models (registered through ``flexrec_register_feedback_models``).

    Subclasses set ``name`` and implement :meth:`fit` and :meth:`predict_labels`.
    """

    name: ClassVar[str]
    is_fitted: bool = False
    needs: dict[str, Need]

    def fit(self, data: FeedbackData) -> FeedbackModel:
        """Learn from observed training labels; returns ``self``."""
        raise NotImplementedError

    def predict_labels(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Label mean and variance ``[N]`` for (user, item) pairs (arrays of equal shape)."""
        raise NotImplementedError

    def predict(self, batch: RankingBatch) -> tuple[Tensor, Tensor]:
        """Gain mean and variance ``[B, K]``; observed candidates keep their gain with variance 0."""
        if not self.is_fitted:
            raise RuntimeError(f"feedback model {self.name!r} is not fitted")
        if batch.user_ids is None or batch.candidate_features is None:
            raise ValueError("feedback models need batch.user_ids and batch.candidate_features")
        users = batch.user_ids.cpu().numpy()[:, None].repeat(batch.num_candidates, 1)
        mu, var = self.predict_labels(users, batch.candidate_ids.cpu().numpy())
        mu_t, sd_t = torch.from_numpy(mu).float(), torch.from_numpy(var).float().clamp_min(0).sqrt()
        probs = (torch.arange(_NODES, dtype=torch.float64) + 0.5) / _NODES
        nodes = torch.special.ndtri(probs).float().view(-1, 1, 1)
        samples = mu_t + sd_t * nodes  # [n, B, K]
        features = batch.candidate_features.detach().cpu().float()
        mean, variance = torch.zeros_like(mu_t), torch.zeros_like(mu_t)
        for name in sorted(set(batch.need)):
            if name not in self.needs:
                raise ValueError(f"feedback model was fitted without need {name!r}")
            rows = torch.tensor([i for i, n in enumerate(batch.need) if n == name])
            context = NeedContext(
                novelty=features[rows, :, NOVELTY], trend=features[rows, :, TREND]
            )
            gains = self.needs[name].gains(samples[:, rows], context)
            mean[rows], variance[rows] = gains.mean(0), gains.var(0, unbiased=False)
        observed = batch.observed.cpu()
        mean = torch.where(observed, batch.gains.cpu().float(), mean)
        variance = torch.where(observed, torch.zeros(()), variance)
        device = batch.gains.device
        return mean.to(device), variance.to(device)

    def fill(self, batch: RankingBatch) -> tuple[Tensor, Tensor]:
        """Gains for the reward: observed ones as given, the rest predicted (``[B, K]`` each)."""
        return self.predict(batch)


def calibration(model: FeedbackModel, heldout: FeedbackData) -> dict[str, float]:
    """Label-scale calibration on held-out observed labels: Gaussian NLL, 95 % coverage, RMSE.

    Zero-variance models (KNN) get ``nll = inf`` and the coverage of an exact prediction.
    """
    mu, var = model.predict_labels(heldout.user, heldout.item)
    return _scores(heldout.label, mu, var)


def imputation_metrics(model: FeedbackModel, tasks: TaskSet) -> dict[str, float]:
    """The same scores on the hidden candidate labels of a sparse task set against the truth."""
    hidden = ~tasks.observed
    users = np.broadcast_to(tasks.users[:, None], hidden.shape)[hidden]
    mu, var = model.predict_labels(users, tasks.candidates[hidden])
    return _scores(tasks.true_labels[hidden], mu, var)


def _scores(y: np.ndarray, mu: np.ndarray, var: np.ndarray) -> dict[str, float]:
    err = y - mu
    with np.errstate(divide="ignore", invalid="ignore"):
        nll = 0.5 * (np.log(2 * np.pi * var) + err**2 / var)
    cover = np.abs(err) <= 1.959964 * np.sqrt(np.maximum(var, 0)) + 1e-12
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "nll": float(np.mean(nll)) if (var > 0).all() else float("inf"),
        "coverage95": float(np.mean(cover)),
        "count": float(len(y)),
    }
