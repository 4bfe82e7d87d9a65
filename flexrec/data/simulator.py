"""Semi-synthetic KuaiRec: a seeded, fully observed user × video watch-ratio matrix.

Real item metadata (KuaiRec 2.0 ``item_categories.csv`` tags and ``kuairec_caption_category.csv``
captions) is combined with a documented generative model; every user × item cell is observed, so
hidden labels can be scored against the truth.

Generative model (all draws from one ``numpy`` generator seeded with ``seed``):

1. Items: ``I`` videos sampled without replacement from the real tables; categories = their tags
   (``C`` = 31). Quality ``q_i ~ N(0, 0.25²)``, popularity ``log π_i ~ N(0, 1)``, noise scale
   ``s_i ~ U(0.15, 0.45)`` (heteroscedastic labels), duration ``U(5, 60)`` s.
2. Users: taste over categories ``τ_uc ~ N(0, 0.5²)``, bias ``b_u ~ N(0, 0.15²)``, and a rank-4
   latent factor ``p_u, v_i ~ N(0, 0.35²)``.
3. Trends: over ``D`` days each item's daily intensity is ``λ_i(d) = π_i · (0.2 + exp(−(d − c_i)² /
   (2 w_i²)))`` with peak ``c_i ~ U(0, D)`` and width ``w_i ~ U(1, 6)``; ``item_daily_features`` play
   counts are ``Poisson(audience · λ_i(d) / Σ_d λ_i)``. Hotness ``h_i(d) = λ_i(d)/max_d λ_i(d)``.
4. Watches: user ``u`` watches every item once, on a day drawn from ``λ_i(·)`` (uniform second in
   the day), so interaction counts in a window before ``t`` follow the trends.
5. Watch ratio: ``log r_ui = μ₀ + a_ui + q_i + b_u + p_u·v_i + 0.3 h_i(d) + s_i ε``, ``ε ~ N(0, 1)``,
   where ``a_ui`` is the mean taste of ``u`` over the item's categories and ``μ₀ = −0.05``;
   ``r`` is clipped to ``[0, 8]``.

:func:`write_simulation` writes ``small_matrix.csv`` (exact KuaiRec columns), ``item_categories.csv``,
``kuairec_caption_category.csv`` (the sampled rows) and ``item_daily_features.csv`` (``video_id,
date, show_cnt, play_cnt``) so :func:`~flexrec.data.kuairec.load_kuairec` reads it back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from flexrec.data._io import find_file
from flexrec.data.dataset import DAY, KUAIREC_SCALE, InteractionData
from flexrec.data.kuairec import MATRIX_COLUMNS, load_caption_table, load_item_categories

__all__ = ["SimulatorConfig", "simulate_frames", "simulate_kuairec", "write_simulation"]

START = 1593878400  # 2020-07-04 16:00 UTC = 2020-07-05 00:00 Beijing, KuaiRec's first day


@dataclass(frozen=True)
class SimulatorConfig:
    """Sizes and seed of the simulation (defaults run in about a second)."""

    num_users: int = 300
    num_items: int = 1000
    num_days: int = 30
    seed: int = 0
    audience: float = 2000.0


def simulate_frames(side: str | Path, config: SimulatorConfig) -> dict[str, pd.DataFrame]:
    """Simulate the KuaiRec tables (see the module docstring) from the real side tables in ``side``.

    Returns:
        ``small_matrix``, ``item_categories``, ``captions`` and ``item_daily`` data frames.
    """
    side = Path(side)
    cat_file = find_file(side, "item_categories.csv")
    assert cat_file is not None
    cats = load_item_categories(cat_file)
    rng = np.random.default_rng(config.seed)
    n_i, n_u, n_d = min(config.num_items, len(cats)), config.num_users, config.num_days
    chosen = np.sort(rng.choice(len(cats), n_i, replace=False))
    cats = cats.iloc[chosen].reset_index(drop=True)
    n_c = int(max(max(c) for c in cats["categories"] if c)) + 1
    multi = np.zeros((n_i, max(n_c, 31)), dtype=np.float64)
    for row, cs in enumerate(cats["categories"]):
        multi[row, cs] = 1.0
    quality = rng.normal(0, 0.25, n_i)
    popularity = np.exp(rng.normal(0, 1, n_i))
    noise = rng.uniform(0.15, 0.45, n_i)
    duration = rng.uniform(5_000, 60_000, n_i).round()
    taste = rng.normal(0, 0.5, (n_u, multi.shape[1]))
    bias = rng.normal(0, 0.15, n_u)
    p_u, v_i = rng.normal(0, 0.35, (n_u, 4)), rng.normal(0, 0.35, (n_i, 4))
    peak, width = rng.uniform(0, n_d, n_i), rng.uniform(1, 6, n_i)
    days = np.arange(n_d)
    shape = 0.2 + np.exp(-((days[None] - peak[:, None]) ** 2) / (2 * width[:, None] ** 2))
    intensity = popularity[:, None] * shape  # [I, D]
    hot = intensity / intensity.max(1, keepdims=True)
    cdf = np.cumsum(intensity / intensity.sum(1, keepdims=True), 1)
    draws = rng.random((n_u, n_i))
    day = np.minimum((draws[..., None] > cdf[None]).sum(-1), n_d - 1)  # [U, I]
    seconds = rng.integers(0, DAY, (n_u, n_i))
    affinity = taste @ multi.T / np.maximum(multi.sum(1), 1)[None]
    log_r = (
        -0.05
        + affinity
        + quality[None]
        + bias[:, None]
        + p_u @ v_i.T
        + 0.3
        * np.take_along_axis(np.broadcast_to(hot[None], (n_u, n_i, n_d)), day[..., None], 2)[..., 0]
        + noise[None] * rng.standard_normal((n_u, n_i))
    )
    ratio = np.clip(np.exp(log_r), 0.0, 8.0)
    stamp = START + day * DAY + seconds
    when = pd.to_datetime(stamp.ravel(), unit="s") + pd.Timedelta(hours=8)
    video_ids = cats["item"].to_numpy()
    matrix = pd.DataFrame(
        {
            "user_id": np.repeat(np.arange(n_u), n_i),
            "video_id": np.tile(video_ids, n_u),
            "play_duration": (ratio * duration[None]).round().astype(np.int64).ravel(),
            "video_duration": np.tile(duration.astype(np.int64), n_u),
            "time": when.strftime("%Y-%m-%d %H:%M:%S"),
            "date": when.strftime("%Y%m%d").astype(np.int64),
            "timestamp": stamp.ravel().astype(np.float64),
            "watch_ratio": ratio.ravel().round(6),
        }
    )[list(MATRIX_COLUMNS)]
    plays = rng.poisson(config.audience * intensity / intensity.sum(1, keepdims=True))
    dates = (pd.to_datetime(START + days * DAY, unit="s") + pd.Timedelta(hours=8)).strftime(
        "%Y%m%d"
    )
    daily = pd.DataFrame(
        {
            "video_id": np.repeat(video_ids, n_d),
            "date": np.tile(dates.astype(np.int64), n_i),
            "show_cnt": (plays * 3).ravel(),
            "play_cnt": plays.ravel(),
        }
    )
    captions = None
    caption_file = find_file(side, "kuairec_caption_category.csv", required=False)
    if caption_file is not None:
        table = load_caption_table(caption_file)
        captions = table[table["item"].isin(video_ids)].reset_index(drop=True)
    item_categories = pd.DataFrame(
        {"video_id": video_ids, "feat": [str(list(c)) for c in cats["categories"]]}
    )
    return {
        "small_matrix": matrix,
        "item_categories": item_categories,
        "captions": captions,
        "item_daily": daily,
    }


def write_simulation(
    side: str | Path, dest: str | Path, config: SimulatorConfig | None = None
) -> Path:
    """Write a simulated KuaiRec folder (official file names and columns) to ``dest``."""
    config = config or SimulatorConfig()
    frames = simulate_frames(side, config)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    frames["small_matrix"].to_csv(dest / "small_matrix.csv", index=False)
    frames["item_categories"].to_csv(dest / "item_categories.csv", index=False)
    frames["item_daily"].to_csv(dest / "item_daily_features.csv", index=False)
    if frames["captions"] is not None:
        captions = frames["captions"].rename(
            columns={"item": "video_id", "category": "first_level_category_name"}
        )
        captions.to_csv(dest / "kuairec_caption_category.csv", index=False)
    return dest


def simulate_kuairec(side: str | Path, config: SimulatorConfig | None = None) -> InteractionData:
    """Simulate in memory and return the dataset (name ``kuairec-sim``), no files written."""
    config = config or SimulatorConfig()
    frames = simulate_frames(side, config)
    m = frames["small_matrix"]
    interactions = pd.DataFrame(
        {
            "user": m["user_id"],
            "item": m["video_id"],
            "label": m["watch_ratio"],
            "timestamp": m["timestamp"].astype(np.int64),
        }
    )
    cats = frames["item_categories"]
    text = pd.Series("", index=cats["video_id"])
    if frames["captions"] is not None:
        c = frames["captions"].drop_duplicates("item").set_index("item")
        text = (
            (c["category"] + ": " + c["caption"])
            .str.strip(": ")
            .reindex(cats["video_id"])
            .fillna("")
        )
    items = pd.DataFrame(
        {
            "item": cats["video_id"].to_numpy(),
            "title": "video " + cats["video_id"].astype(str),
            "year": -1,
            "categories": [eval_list(f) for f in cats["feat"]],
            "text": text.to_numpy(),
        }
    )
    d = frames["item_daily"]
    daily = pd.DataFrame(
        {
            "item": d["video_id"],
            "day": (
                pd.to_datetime(d["date"].astype(str), format="%Y%m%d") - pd.Timestamp(0)
            ).dt.days,
            "count": d["play_cnt"].astype(np.float64),
        }
    )
    return InteractionData.build(
        "kuairec-sim",
        interactions,
        items,
        [f"tag {i}" for i in range(31)],
        KUAIREC_SCALE,
        trend_window=DAY,
        item_daily=daily,
        provenance={"source": str(side), "layout": "kuairec-sim", **asdict(config)},
    )


def eval_list(text: str) -> list[int]:
    """``"[3, 7]"`` → ``[3, 7]``."""
    inner = text.strip()[1:-1]
    return [int(v) for v in inner.split(",") if v.strip()]
