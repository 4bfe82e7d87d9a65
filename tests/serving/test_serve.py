"""``flexrec serve`` end to end: a real server process on a free localhost port, a real HTTP client,
real checkpoints of the native policy and of the tiny LLM with its LoRA adapter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from flexrec.serving.model import load_served_model
from flexrec.serving.recommender import Recommender
from flexrec.testing.server import call, running_server

# MovieLens ids: Toy Story, Star Wars IV, Empire Strikes Back; candidates are well-known films
HISTORY = [1, 260, 1196]
CANDIDATES = [318, 858, 2571, 356, 296, 593, 2959, 527]


def _assert_ranking(body: dict[str, Any], candidates: list[Any]) -> None:
    ranking = body["ranking"]
    assert sorted(str(e["item"]) for e in ranking) == sorted(str(c) for c in candidates)
    assert all(0.0 < e["probability"] <= 1.0 + 1e-9 for e in ranking)
    assert sum(e["first_probability"] for e in ranking) == pytest.approx(1.0, abs=1e-5)
    # the first item is the greedy choice of the first step
    top = max(ranking, key=lambda e: e["first_probability"])
    assert ranking[0]["item"] == top["item"]
    assert ranking[-1]["probability"] == pytest.approx(1.0)  # one candidate left at the end
    assert all(isinstance(e["title"], str) and e["title"] for e in ranking)


def test_native_policy_served_end_to_end(native_run: Path) -> None:
    request = {"history": HISTORY, "ratings": [5, 4.5, 5], "candidates": CANDIDATES}
    with running_server(native_run, "--max-wait-ms", "100") as url:
        status, health = call(url, "GET", "/health")
        assert status == 200 and health["status"] == "ok" and health["policy"] == "native"
        status, model = call(url, "GET", "/model")
        assert status == 200
        assert model["policy"] == "native" and model["dataset"] == "ml-latest-small"
        assert model["items"] == 9742 and model["max_candidates"] == 50
        assert [n["name"] for n in model["needs"]] == ["maximize_interest"]
        assert model["needs"][0]["instruction"].startswith("Rank the candidates")
        assert model["free_instructions"] is False and model["text_history"] is False

        status, body = call(url, "POST", "/rank", {**request, "need": "maximize_interest"})
        assert status == 200, body
        assert body["need"] == "maximize_interest"
        _assert_ranking(body, CANDIDATES)
        # ids may be sent as strings; the need defaults to the model's first
        status, same = call(
            url, "POST", "/rank", {**request, "candidates": [str(c) for c in CANDIDATES]}
        )
        assert status == 200 and [e["item"] for e in same["ranking"]] == [
            e["item"] for e in body["ranking"]
        ]

        # 16 concurrent requests with different histories: batched, and each answer equals the
        # answer to the same request alone
        requests = [
            {"history": HISTORY[: i % 4], "candidates": CANDIDATES[i % 3 :]} for i in range(16)
        ]
        alone = [call(url, "POST", "/rank", r)[1] for r in requests]
        before = call(url, "GET", "/health")[1]
        with ThreadPoolExecutor(16) as pool:
            together = list(pool.map(lambda r: call(url, "POST", "/rank", r)[1], requests))
        after = call(url, "GET", "/health")[1]
        batches = after["batches"] - before["batches"]
        assert after["requests"] - before["requests"] == 16 and batches < 16
        for one, other in zip(alone, together, strict=True):
            assert [e["item"] for e in one["ranking"]] == [e["item"] for e in other["ranking"]]
            for a, b in zip(one["ranking"], other["ranking"], strict=True):
                assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)


def test_the_served_ranking_is_the_policys(native_run: Path) -> None:
    """In process: the recommender ranks as the policy's own greedy ranking of the same batch."""
    model = load_served_model(native_run / "checkpoints" / "last.ckpt")
    recommender = Recommender(model)
    query = recommender.prepare(CANDIDATES, HISTORY, [5.0, 4.5, 5.0], need="maximize_interest")
    batch = recommender.batch([query])
    assert batch.history_ids.tolist() == [[model.catalogue.index[str(i)] for i in HISTORY]]
    assert batch.candidate_features.shape == (1, len(CANDIDATES), 6)
    order = model.policy.rank(batch)[0].tolist()
    (result,) = recommender.rank([query])
    assert [e["item"] for e in result["ranking"]] == [CANDIDATES[c] for c in order]
    # a longer history than the run's history_len keeps its most recent items, as training did
    known = model.catalogue.item_ids[:60]
    long = recommender.prepare(CANDIDATES, known)
    assert len(long.history) == model.history_len == 10
    assert long.history == list(range(50, 60))


BAD_REQUESTS = [
    ("not json", b"{candidates: [1]", 400, "not valid JSON"),
    ("empty body", b"", 400, "no body"),
    ("not an object", b"[318, 858]", 422, "must be a JSON object"),
    ("no candidates", {"history": [1]}, 422, "candidates: Field required"),
    ("empty candidates", {"candidates": []}, 422, "candidates is empty"),
    (
        "a float id",
        {"candidates": [318, 1.5]},
        422,
        "candidates.1: an item id is an integer or a string",
    ),
    (
        "unknown field",
        {"candidates": [318], "user": 7},
        422,
        "user: Extra inputs are not permitted",
    ),
    (
        "unknown candidate",
        {"candidates": [318, 99999999]},
        422,
        "unknown candidate item id 99999999",
    ),
    (
        "unknown history item",
        {"candidates": [318], "history": ["nope"]},
        422,
        'unknown history item id "nope"',
    ),
    (
        "unknown need",
        {"candidates": [318], "need": "cheap"},
        422,
        "unknown need 'cheap'; this model knows: maximize_interest",
    ),
    (
        "too many candidates",
        {"candidates": CANDIDATES[:6]},
        422,
        "too many candidates: 6, this server takes at most 5",
    ),
    ("repeated candidates", {"candidates": [318, 858, 318]}, 422, "candidates repeat 318"),
    (
        "free instruction",
        {"candidates": [318], "instruction": "cheap films"},
        422,
        "reads need names only",
    ),
    (
        "text history",
        {"candidates": [318], "history_text": ["a film"]},
        422,
        "history_text needs a policy that reads text",
    ),
    (
        "ratings mismatch",
        {"candidates": [318], "history": [1], "ratings": [4, 5]},
        422,
        "ratings has 2 values for 1 history items",
    ),
    ("rating type", {"candidates": [318], "history": [1], "ratings": ["good"]}, 422, "ratings.0:"),
]


def test_bad_requests_get_4xx_with_one_line_errors(native_run: Path) -> None:
    with running_server(native_run, "--max-candidates", "5") as url:
        for name, body, status, message in BAD_REQUESTS:
            raw = body if isinstance(body, bytes) else None
            got, answer = call(url, "POST", "/rank", None if raw is not None else body, raw=raw)
            assert got == status, (name, answer)
            assert isinstance(answer, dict) and list(answer) == ["error"], (name, answer)
            assert "\n" not in answer["error"] and "Traceback" not in answer["error"], name
            assert message in answer["error"], (name, answer)
        assert call(url, "GET", "/nowhere") == (404, {"error": "Not Found"})
        assert call(url, "GET", "/rank") == (405, {"error": "Method Not Allowed"})
        # still serving
        status, body = call(url, "POST", "/rank", {"candidates": CANDIDATES[:5]})
        assert status == 200 and len(body["ranking"]) == 5


def test_llm_policy_served_end_to_end(llm_run: Path) -> None:
    with running_server(llm_run) as url:
        status, model = call(url, "GET", "/model")
        assert status == 200 and model["policy"] == "llm"
        assert model["free_instructions"] is True and model["text_history"] is True
        requests = [
            {"history": HISTORY, "ratings": [5, 4, 4.5], "candidates": CANDIDATES[:6]},
            {"history": HISTORY, "candidates": CANDIDATES, "need": "maximize_interest"},
            {
                "history_text": ["Toy Story (1995) | Animation | your rating: 5"],
                "candidates": CANDIDATES[:4],
            },
            {"candidates": CANDIDATES[:5], "instruction": "Put the scariest films first."},
        ]
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda r: call(url, "POST", "/rank", r), requests))
        for request, (status, body) in zip(requests, answers, strict=True):
            assert status == 200, body
            _assert_ranking(body, request["candidates"])
        assert answers[3][1]["instruction"] == "Put the scariest films first."
        status, body = call(
            url, "POST", "/rank", {"candidates": [318], "history": [1], "history_text": ["x"]}
        )
        assert status == 422 and "not both" in body["error"]


def _flexrec(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flexrec.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
        check=False,
    )


def _one_line(proc: subprocess.CompletedProcess[str], message: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flexrec: error: "), proc.stderr[-2000:]
    assert message in lines[0], lines[0]


def test_serve_refuses_bad_models_and_options_in_one_line(tmp_path: Path, native_run: Path) -> None:
    _one_line(_flexrec("serve", str(tmp_path / "missing.ckpt")), "no such file or folder")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    _one_line(_flexrec("serve", str(junk)), "not a checkpoint nor a flexrec export")
    _one_line(_flexrec("serve", str(tmp_path)), "neither a run folder")
    _one_line(
        _flexrec("serve", str(native_run), "--max-batch-size", "0"), "--max-batch-size must be >= 1"
    )
    _one_line(_flexrec("serve", str(native_run), "--port", "70000"), "--port must be in 0..65535")


def test_serve_refuses_a_run_without_a_catalogue(tmp_path: Path) -> None:
    from flexrec.cli import main

    root = tmp_path / "synthetic"
    config = Path(__file__).resolve().parents[2] / "configs" / "synthetic.yaml"
    args = [
        "--trainer.max_steps=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={root}",
    ]
    assert main(["fit", f"--config={config}", *args]) == 0
    proc = _flexrec("serve", str(root / "logs" / "version_0"))
    _one_line(proc, "has no item catalogue")


def test_json_of_the_model_description_is_one_object(native_run: Path) -> None:
    recommender = Recommender(load_served_model(native_run))
    description = recommender.describe()
    assert json.loads(json.dumps(description)) == description
