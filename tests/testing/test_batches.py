"""Hand-built batches are the same in every process, and read the embedded (gzipped) MovieLens."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from flexrec.data.loaders import EMBEDDED_DIR
from flexrec.testing.batches import load_movie_titles, make_batch, movielens_task

_PRINT_TEXT = (
    "import json; from flexrec.testing.batches import make_batch, synthetic_titles; "
    "b = make_batch(batch_size=3); "
    "print(json.dumps([synthetic_titles(500), b.history_text, b.candidate_text]))"
)


def _text_under_hash_seed(seed: str) -> list:
    proc = subprocess.run(
        [sys.executable, "-c", _PRINT_TEXT],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": seed},
        check=True,
    )
    return json.loads(proc.stdout)


def test_synthetic_titles_do_not_depend_on_the_hash_seed() -> None:
    # string hashes (hence a set's order) differ between these seeds: the prompt text must not
    a, b = _text_under_hash_seed("0"), _text_under_hash_seed("1")
    assert a == b
    titles = [tuple(pair) for pair in a[0]]
    assert titles[1] == ("Crimson River (1971)", "Drama|Thriller")  # insertion order
    assert all(len(genres.split("|")) == 2 for _, genres in titles)


def test_movielens_task_reads_the_embedded_gzipped_copy() -> None:
    folder = EMBEDDED_DIR / "ml-latest-small"
    assert not (folder / "ratings.csv").exists() and (folder / "ratings.csv.gz").is_file()
    batch = movielens_task(folder, user_id=1, history_length=10, num_candidates=20)
    assert batch.candidate_ids.shape == (1, 20) and batch.history_ids.shape == (1, 10)
    assert len(batch.candidate_text[0]) == 20 and all(batch.candidate_text[0])
    assert load_movie_titles(folder / "movies.csv", limit=1) == [
        ("Toy Story (1995)", "Adventure|Animation|Children|Comedy|Fantasy")
    ]
    assert make_batch(movies_csv=folder / "movies.csv").candidate_text[0]
