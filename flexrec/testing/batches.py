"""Hand-built :class:`~flexrec.types.RankingBatch` objects for tests and benchmarks.

:func:`make_batch` needs no data layer: titles come from a MovieLens ``movies.csv`` when a path is
given, otherwise from a synthetic list. :func:`movielens_task` reads a MovieLens folder, plain or
gzipped (``ratings.csv.gz``), such as the copy embedded in the package
(``flexrec.data.loaders.EMBEDDED_DIR / "ml-latest-small"``). Histories may have different lengths per task (``-1`` pad),
so prompts have different token lengths (exercises left padding).
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path
from typing import IO

import torch

from flexrec.types import RankingBatch

__all__ = ["load_movie_titles", "make_batch", "movielens_task", "synthetic_titles"]

_ADJ = ["Silent", "Crimson", "Lost", "Electric", "Hidden", "Golden", "Broken", "Last", "Wild"]
_NOUN = ["River", "Empire", "Garden", "Signal", "Harbor", "Machine", "Summer", "Frontier", "Code"]
_GENRES = ["Comedy", "Drama", "Action", "Romance", "Thriller", "Animation", "Sci-Fi", "Horror"]

INSTRUCTIONS = {
    "maximize_interest": "Rank the candidate movies by how much I will enjoy them.",
    "explore_new_topics": "Rank the candidates so that movies from genres I have not watched come first.",
    "trend_promotion": "Rank the candidates favouring movies that are popular right now and that I will like.",
}


def synthetic_titles(n: int) -> list[tuple[str, str]]:
    """``n`` deterministic ``(title, genres)`` pairs (the same in every process).

    >>> synthetic_titles(2)
    [('Silent River (1970)', 'Comedy|Drama'), ('Crimson River (1971)', 'Drama|Thriller')]
    """
    out = []
    for i in range(n):
        title = f"{_ADJ[i % len(_ADJ)]} {_NOUN[(i // len(_ADJ)) % len(_NOUN)]} ({1970 + i % 49})"
        # dict, not set: a set's order follows PYTHONHASHSEED, so prompts would differ by process
        genres = dict.fromkeys([_GENRES[i % 8], _GENRES[(i * 3 + 1) % 8]])
        out.append((title, "|".join(genres)))
    return out


def _open_text(path: Path) -> IO[str]:
    """``path``, or ``path.gz`` when only the gzipped file exists, opened as UTF-8 CSV text."""
    if not path.is_file() and path.with_name(path.name + ".gz").is_file():
        return gzip.open(path.with_name(path.name + ".gz"), "rt", newline="", encoding="utf-8")
    return open(path, newline="", encoding="utf-8")


def load_movie_titles(movies_csv: str | Path, limit: int = 2000) -> list[tuple[str, str]]:
    """The first ``limit`` ``(title, genres)`` rows of a MovieLens ``movies.csv`` (or ``.csv.gz``)."""
    with _open_text(Path(movies_csv)) as handle:
        reader = csv.DictReader(handle)
        rows = []
        for row in reader:
            rows.append((row["title"], row["genres"]))
            if len(rows) >= limit:
                break
    return rows


def make_batch(
    batch_size: int = 2,
    num_candidates: int = 6,
    history_lengths: list[int] | None = None,
    num_features: int = 4,
    needs: list[str] | None = None,
    movies_csv: str | Path | None = None,
    seed: int = 0,
) -> RankingBatch:
    """A realistic random batch of ranking tasks.

    Args:
        batch_size: ``B``.
        num_candidates: ``K``.
        history_lengths: history length per task (default ``3, 5, 3, 5, ...``); ``L`` is the max.
        num_features: ``F`` of ``candidate_features``.
        needs: need name per task (cycled); default ``maximize_interest`` and the others.
        movies_csv: optional MovieLens ``movies.csv`` for real titles and genres.
        seed: random seed.

    Returns:
        A fully observed :class:`RankingBatch` with text fields filled in.
    """
    gen = torch.Generator().manual_seed(seed)
    items = load_movie_titles(movies_csv) if movies_csv else synthetic_titles(500)
    lengths = history_lengths or [3 + 2 * (i % 2) for i in range(batch_size)]
    need_names = needs or list(INSTRUCTIONS)
    max_len = max(lengths)
    cand = torch.stack(
        [torch.randperm(len(items), generator=gen)[: num_candidates + max_len] for _ in lengths]
    )
    candidate_ids = cand[:, :num_candidates]
    history_ids = torch.full((batch_size, max_len), -1, dtype=torch.long)
    history_labels = torch.zeros(batch_size, max_len)
    labels = (torch.randint(1, 11, (batch_size, num_candidates), generator=gen) / 2).float()
    history_text, candidate_text, need, instruction = [], [], [], []
    for b, length in enumerate(lengths):
        history_ids[b, :length] = cand[b, num_candidates : num_candidates + length]
        history_labels[b, :length] = torch.randint(1, 11, (length,), generator=gen).float() / 2
        history_text.append(
            [
                f"{items[i][0]} [{items[i][1]}] rated {history_labels[b, j].item():.1f}"
                for j, i in enumerate(history_ids[b, :length].tolist())
            ]
        )
        candidate_text.append([f"{items[i][0]} [{items[i][1]}]" for i in candidate_ids[b].tolist()])
        name = need_names[b % len(need_names)]
        need.append(name)
        instruction.append(INSTRUCTIONS.get(name, name.replace("_", " ")))
    gains = ((labels - 3.0).clamp(0, 2) / 2).float()
    return RankingBatch(
        candidate_ids=candidate_ids,
        gains=gains,
        observed=torch.ones(batch_size, num_candidates, dtype=torch.bool),
        relevant=labels >= 4,
        need=need,
        instruction=instruction,
        history_ids=history_ids,
        history_labels=history_labels,
        user_ids=torch.arange(batch_size),
        need_index=torch.tensor(
            [list(INSTRUCTIONS).index(n) if n in INSTRUCTIONS else 0 for n in need]
        ),
        labels=labels,
        candidate_features=torch.rand(batch_size, num_candidates, num_features, generator=gen),
        history_text=history_text,
        candidate_text=candidate_text,
        meta=[
            {"dataset": "synthetic" if movies_csv is None else "movies_csv", "seed": seed}
            for _ in range(batch_size)
        ],
    )


def movielens_task(
    data_dir: str | Path,
    user_id: int = 1,
    history_length: int = 10,
    num_candidates: int = 20,
    need: str = "maximize_interest",
    seed: int = 0,
) -> RankingBatch:
    """One real MovieLens task (``B = 1``) read from ``ratings.csv`` and ``movies.csv``.

    The user's ratings are sorted by time; the history is the ``history_length`` ratings before the
    cut and the candidates are the next ``num_candidates`` rated movies, shuffled (seeded).

    Args:
        data_dir: a MovieLens latest / 20M style folder (``.csv`` or ``.csv.gz`` files).
        user_id: MovieLens ``userId``.
        history_length: ``L``.
        num_candidates: ``K``.
        need: need name (its instruction is taken from :data:`INSTRUCTIONS`).
        seed: shuffle seed of the candidate order.

    Returns:
        A fully observed :class:`RankingBatch` with ``B = 1``.
    """
    root = Path(data_dir)
    with _open_text(root / "movies.csv") as handle:
        movies = {int(r["movieId"]): (r["title"], r["genres"]) for r in csv.DictReader(handle)}
    with _open_text(root / "ratings.csv") as handle:
        rows = [
            (int(r["timestamp"]), int(r["movieId"]), float(r["rating"]))
            for r in csv.DictReader(handle)
            if int(r["userId"]) == user_id
        ]
    rows.sort()
    if len(rows) < history_length + num_candidates:
        raise ValueError(f"user {user_id} has only {len(rows)} ratings")
    history = rows[:history_length]
    order = torch.randperm(num_candidates, generator=torch.Generator().manual_seed(seed))
    cands = [rows[history_length + i] for i in order.tolist()]
    labels = torch.tensor([[c[2] for c in cands]])

    def describe(movie: int) -> str:
        title, genres = movies[movie]
        return f"{title} [{genres.replace('|', ', ')}]"

    return RankingBatch(
        candidate_ids=torch.tensor([[c[1] for c in cands]]),
        gains=((labels - 3.0).clamp(0, 2) / 2).float(),
        observed=torch.ones(1, num_candidates, dtype=torch.bool),
        relevant=labels >= 4,
        need=[need],
        instruction=[INSTRUCTIONS.get(need, need)],
        history_ids=torch.tensor([[h[1] for h in history]]),
        history_labels=torch.tensor([[h[2] for h in history]]),
        user_ids=torch.tensor([user_id]),
        need_index=torch.tensor([0]),
        labels=labels,
        candidate_features=None,
        history_text=[[f"{describe(h[1])} rated {h[2]:.1f}" for h in history]],
        candidate_text=[[describe(c[1]) for c in cands]],
        meta=[{"dataset": "movielens", "user": user_id, "cut": rows[history_length][0]}],
    )
