"""Requests to a served model: checked one by one, ranked in batches.

A request names a user's history (item ids of the catalogue, with optional ratings; or, for a
policy that reads text, free-text lines), the candidates (item ids) and a need (a registered name;
or, for a policy that reads instructions, a free instruction). :meth:`Recommender.prepare` checks
it against the model and turns it into a :class:`Query`, or raises :class:`RequestError` naming the
problem in one line. :meth:`Recommender.rank` ranks any number of prepared queries, batching those
with the same candidate count into one :class:`~flexrec.types.RankingBatch`, and returns for each
the greedy ranking with per-item probabilities:

- ``probability``: ``π(item | x, items above it)``, the probability with which the policy places
  the item at its rank given the items ranked above it (the product over the list is the
  probability of the whole ranking);
- ``first_probability``: ``π(item | x)`` at the first step, the probability that the policy puts
  the item first (these sum to 1 over the candidates: a score comparable across items).

The inputs are built as in training: the history is cut to the run's ``history_len`` most recent
items, candidate features (:func:`flexrec.data.features.candidate_features`) and item lines
(:meth:`flexrec.needs.base.Need.item_text`) come from the catalogue's statistics
(:class:`~flexrec.serving.model.Catalogue`). Ratings may be left out (unknown, as a hidden label in
training).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import torch

from flexrec.errors import ConfigError
from flexrec.serving.model import ServedModel, plain
from flexrec.types import RankingBatch

__all__ = ["Query", "Recommender", "RequestError"]

DEFAULT_MAX_CANDIDATES = 50


class RequestError(Exception):
    """A request the model cannot answer; ``status`` is the HTTP status (4xx) to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Query:
    """A checked request, ready to be batched.

    Attributes:
        need: index of the need in the model's need vocabulary.
        instruction: the instruction the policy reads.
        candidates: ``K`` item indices.
        history: item indices of the history (most recent last), at most ``history_len``.
        ratings: the history's ratings (NaN where not given).
        features: ``[K, F]`` candidate features.
        candidate_text: ``K`` item lines (policies that read text), else empty.
        history_text: history lines (policies that read text), else empty.
    """

    need: int
    instruction: str
    candidates: list[int]
    history: list[int]
    ratings: list[float]
    features: np.ndarray
    candidate_text: list[str]
    history_text: list[str]


def _reads(policy: Any) -> tuple[bool, bool]:
    """Whether a policy reads (free instructions, text lines)."""
    from flexrec.policies.llm import LLMPolicy
    from flexrec.policies.native import NativePolicy

    if isinstance(policy, LLMPolicy):
        return True, True
    if isinstance(policy, NativePolicy):
        return policy.net.need_encoder == "text", False
    return False, False


def _describe_ids(ids: Sequence[Any], limit: int = 3) -> str:
    shown = ", ".join(json.dumps(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


class Recommender:
    """Checks and ranks requests for a :class:`~flexrec.serving.model.ServedModel`.

    Args:
        model: the served model.
        max_candidates: the most candidates a request may carry (the LLM policy also needs that
            many identifiers).

    Raises:
        ConfigError: ``max_candidates`` below 1 or more than the LLM policy can label, or a model
            whose candidate features are not flexrec's.
    """

    def __init__(self, model: ServedModel, max_candidates: int = DEFAULT_MAX_CANDIDATES) -> None:
        from flexrec.data.features import FEATURE_NAMES

        if max_candidates < 1:
            raise ConfigError(f"max_candidates must be >= 1, got {max_candidates}")
        self.model = model
        self.max_candidates = max_candidates
        self.free_instructions, self.text_history = _reads(model.policy)
        names = tuple(model.info.feature_names)
        if model.info.num_features and names != FEATURE_NAMES:
            raise ConfigError(
                f"the model reads the features {list(names)}, flexrec's serving computes "
                f"{list(FEATURE_NAMES)}"
            )
        self.need_names = [n.name for n in model.needs]
        cat = model.catalogue
        self._features = cast(
            Any,
            SimpleNamespace(
                scale=cat.label_scale(),
                num_users=cat.num_users,
                item_categories=cat.item_categories,
            ),
        )
        paths = getattr(model.policy, "identifier_paths", None)
        if paths is not None:
            try:
                paths(max_candidates)
            except ValueError as exc:
                raise ConfigError(
                    f"max_candidates {max_candidates}: the LLM policy cannot label that many "
                    f"candidates ({' '.join(str(exc).split())[:200]})"
                ) from exc

    # ------------------------------------------------------------------ description
    def describe(self) -> dict[str, Any]:
        """What the model is and what requests it takes (``GET /model``)."""
        model = self.model
        return {
            "policy": model.kind,
            "policy_spec": plain(model.policy_spec),
            "source": model.source,
            "dataset": model.catalogue.dataset,
            "items": model.catalogue.num_items,
            "needs": [
                {"name": need.name, "instruction": need.instructions[0]} for need in model.needs
            ],
            "free_instructions": self.free_instructions,
            "text_history": self.text_history,
            "max_candidates": self.max_candidates,
            "history_len": model.history_len,
            "trained_num_candidates": model.num_candidates,
        }

    # ------------------------------------------------------------------ checking
    def _items(self, ids: Sequence[Any], what: str) -> list[int]:
        index = self.model.catalogue.index
        unknown = [i for i in ids if str(i) not in index]
        if unknown:
            cat = self.model.catalogue
            raise RequestError(
                f"unknown {what} item id{'s' if len(unknown) > 1 else ''} "
                f"{_describe_ids(unknown)}: not in the {cat.dataset} catalogue of "
                f"{cat.num_items:,} items"
            )
        return [index[str(i)] for i in ids]

    def prepare(
        self,
        candidates: Sequence[Any],
        history: Sequence[Any] = (),
        ratings: Sequence[float] | None = None,
        history_text: Sequence[str] | None = None,
        need: str | None = None,
        instruction: str | None = None,
    ) -> Query:
        """Check a request against the model and build its query.

        Args:
            candidates: item ids of the catalogue (1 to ``max_candidates``, distinct).
            history: item ids the user interacted with, oldest first.
            ratings: the user's rating of each history item (same length), or None.
            history_text: free-text history lines, oldest first (policies that read text; not
                together with ``history``).
            need: a need of the model (default: its first).
            instruction: a free instruction (policies that read instructions), read instead of
                the need's own; the need still chooses how items are described.

        Raises:
            RequestError: the problem, in one line.
        """
        model = self.model
        if not candidates:
            raise RequestError("candidates is empty: give at least one item id")
        if len(candidates) > self.max_candidates:
            raise RequestError(
                f"too many candidates: {len(candidates)}, this server takes at most "
                f"{self.max_candidates}"
            )
        seen: set[str] = set()
        repeated = []
        for c in candidates:
            if str(c) in seen:
                repeated.append(c)
            seen.add(str(c))
        if repeated:
            raise RequestError(f"candidates repeat {_describe_ids(repeated)}")
        cand = self._items(candidates, "candidate")
        if need is None:
            need_index = 0
        elif need in self.need_names:
            need_index = self.need_names.index(need)
        else:
            raise RequestError(
                f"unknown need {need!r}; this model knows: {', '.join(self.need_names)}"
            )
        bound = model.needs[need_index]
        if instruction is not None:
            if not self.free_instructions:
                raise RequestError(
                    f"this {model.kind} policy reads need names only, not free instructions; "
                    f"give need (one of {', '.join(self.need_names)})"
                )
            if not instruction.strip():
                raise RequestError("instruction is empty")
        text = instruction if instruction is not None else bound.instructions[0]
        if ratings is not None and len(ratings) != len(history):
            raise RequestError(
                f"ratings has {len(ratings)} values for {len(history)} history items"
            )
        if history_text is not None:
            if not self.text_history:
                raise RequestError(
                    f"history_text needs a policy that reads text; this {model.kind} policy "
                    "reads item ids: give history"
                )
            if history:
                raise RequestError("give history (item ids) or history_text, not both")
        keep = model.history_len
        hist = self._items(history, "history")[-keep:] if keep else []
        given = [float(r) for r in ratings] if ratings is not None else [math.nan] * len(history)
        if ratings is not None and not all(math.isfinite(r) for r in given):
            raise RequestError("ratings must be finite numbers")
        labels = given[len(given) - len(hist) :] if hist else []
        features = self._candidate_features(cand, hist, bound.name)
        candidate_lines: list[str] = []
        history_lines: list[str] = []
        if model.with_text or self.text_history:
            cat = model.catalogue
            candidate_lines = [bound.item_text(cat.stats(i, bound.name)) for i in cand]
            if history_text is not None:
                history_lines = [str(h) for h in history_text][-keep:] if keep else []
            else:
                history_lines = [
                    bound.history_text(cat.stats(i, bound.name, label=r))
                    for i, r in zip(hist, labels, strict=True)
                ]
        query = Query(
            need_index, text, cand, hist, labels, features, candidate_lines, history_lines
        )
        if self.text_history:
            self._check_prompt(query)
        return query

    def _candidate_features(self, cand: list[int], hist: list[int], need: str) -> np.ndarray:
        from flexrec.data.features import candidate_features

        cat = self.model.catalogue
        if not self.model.info.num_features:
            return np.zeros((len(cand), 0), dtype=np.float32)
        items = np.asarray([cand], dtype=np.int64)
        history = np.asarray([hist], dtype=np.int64).reshape(1, len(hist))
        out = candidate_features(
            self._features,
            items,
            history,
            cat.count[items],
            cat.mean_label[items],
            cat.recent[need][items],
        )
        return cast(np.ndarray, out[0])

    def _check_prompt(self, query: Query) -> None:
        """The LLM's prompt fits its ``max_prompt_tokens`` (history is dropped to fit; the
        candidates alone must fit)."""
        try:
            self.model.policy.prompt_ids(self.batch([query]))  # type: ignore[operator]
        except ValueError as exc:
            raise RequestError(
                "the prompt does not fit the model's max_prompt_tokens even without history: "
                "give fewer candidates"
            ) from exc

    def answer(self, requests: Sequence[Mapping[str, Any]]) -> list[dict[str, Any] | RequestError]:
        """Check and rank a batch of requests (keyword arguments of :meth:`prepare`): a result,
        or the :class:`RequestError` of a request that cannot be answered, for each.

        Everything that touches the model or its tokenizer runs here, in the caller's thread
        (the server's single batch thread: fast tokenizers must not be shared across threads).
        """
        out: list[dict[str, Any] | RequestError] = []
        valid: list[Query] = []
        places: list[int] = []
        for request in requests:
            try:
                query = self.prepare(**request)
            except RequestError as exc:
                out.append(exc)
                continue
            places.append(len(out))
            out.append({})
            valid.append(query)
        for place, result in zip(places, self.rank(valid) if valid else [], strict=True):
            out[place] = result
        return out

    # ------------------------------------------------------------------ ranking
    def batch(self, queries: Sequence[Query]) -> RankingBatch:
        """The :class:`~flexrec.types.RankingBatch` of queries with the same candidate count."""
        b, k = len(queries), len(queries[0].candidates)
        length = max(len(q.history) for q in queries)
        history = torch.full((b, length), -1, dtype=torch.long)
        labels = torch.full((b, length), math.nan)
        for row, q in enumerate(queries):
            if q.history:
                history[row, length - len(q.history) :] = torch.tensor(q.history)
                labels[row, length - len(q.history) :] = torch.tensor(q.ratings)
        cat = self.model.catalogue
        candidates = torch.tensor([q.candidates for q in queries], dtype=torch.long)
        with_text = bool(queries[0].candidate_text)
        return RankingBatch(
            candidate_ids=candidates,
            gains=torch.zeros(b, k),
            observed=torch.ones(b, k, dtype=torch.bool),
            relevant=torch.zeros(b, k, dtype=torch.bool),
            need=[self.need_names[q.need] for q in queries],
            instruction=[q.instruction for q in queries],
            history_ids=history,
            history_labels=labels,
            need_index=torch.tensor([q.need for q in queries], dtype=torch.long),
            candidate_features=torch.from_numpy(np.stack([q.features for q in queries])).float(),
            candidate_categories=torch.from_numpy(cat.item_categories[candidates.numpy()]),
            history_text=[q.history_text for q in queries] if with_text else [],
            candidate_text=[q.candidate_text for q in queries] if with_text else [],
        )

    @torch.inference_mode()
    def rank(self, queries: Sequence[Query]) -> list[dict[str, Any]]:
        """Rank queries (any candidate counts: one batch per count); one result per query."""
        results: list[dict[str, Any]] = [{} for _ in queries]
        groups: dict[int, list[int]] = {}
        for i, q in enumerate(queries):
            groups.setdefault(len(q.candidates), []).append(i)
        for members in groups.values():
            batch = self.batch([queries[i] for i in members])
            rollout = self.model.policy.sample(batch, 1, temperature=0.0)
            perms = rollout.permutations[:, 0].cpu()
            placed = rollout.logprobs[:, 0].double().exp().cpu()
            first = None
            if rollout.step_logprobs is not None:
                first = rollout.step_logprobs[:, 0, 0].double().exp().cpu()
            for row, i in enumerate(members):
                results[i] = self._result(queries[i], perms[row], placed[row], first, row)
        return results

    def _result(
        self,
        query: Query,
        order: torch.Tensor,
        placed: torch.Tensor,
        first: torch.Tensor | None,
        row: int,
    ) -> dict[str, Any]:
        cat = self.model.catalogue
        ranking = []
        for rank, c in enumerate(order.tolist()):
            item = query.candidates[c]
            entry = {
                "item": cat.item_ids[item],
                "title": cat.title(item),
                "probability": float(placed[rank]),
            }
            if first is not None:
                entry["first_probability"] = float(first[row, c])
            ranking.append(entry)
        return {
            "need": self.need_names[query.need],
            "instruction": query.instruction,
            "ranking": ranking,
        }
