"""Seeded generators of large crossed designs for `benchmarks/crossed.py`.

* `ratings`: MovieLens-1M-sized (1,000,209 ratings, 6,040 users crossed with 3,706 items) with
  skewed counts like the real data (users: at least 20 ratings, median near 100, a few over
  2,000; items: a long tail of rarely rated ones and a few rated by half the users);
* `uniform`: ``rows`` observations on uniformly drawn pairs of two factors of ``levels`` levels each
  (the worst case for fill-in: no structure an ordering could exploit).

The response is ``mu + a_user + b_item + e`` with SDs 0.5, 0.3 and 1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ML_ROWS = 1_000_209
ML_USERS = 6_040
ML_ITEMS = 3_706


def _response(
    rng: np.random.Generator, u: np.ndarray, i: np.ndarray, nu: int, ni: int
) -> np.ndarray:
    a = rng.normal(0.0, 0.5, nu)
    b = rng.normal(0.0, 0.3, ni)
    return 3.5 + a[u] + b[i] + rng.normal(0.0, 1.0, u.size)


def ratings(
    seed: int = 1, rows: int = ML_ROWS, users: int = ML_USERS, items: int = ML_ITEMS
) -> pd.DataFrame:
    """A ratings design with MovieLens-1M's size and skew; one rating per (user, item) pair."""
    rng = np.random.default_rng(seed)
    # user activity: 20 + lognormal, scaled to the total, capped below the number of items
    raw = rng.lognormal(np.log(80.0), 1.1, users)
    counts = 20 + np.floor(raw * (rows - 20 * users) / raw.sum()).astype(np.int64)
    counts = np.minimum(counts, items // 2 + 600)
    short = rows - int(counts.sum())
    while short > 0:  # top up the rounding loss on random users with room left
        room = np.flatnonzero(counts < items // 2 + 600)
        pick = rng.choice(room, size=min(short, room.size), replace=False)
        counts[pick] += 1
        short = rows - int(counts.sum())
    # item popularity: log-normal weights; each user draws without replacement (Gumbel top-k)
    logw = rng.normal(0.0, 1.4, items)
    user = np.repeat(np.arange(users), counts)
    item = np.empty(rows, dtype=np.int64)
    at = 0
    for u in range(users):
        k = int(counts[u])
        keys = logw + rng.gumbel(size=items)
        item[at : at + k] = np.argpartition(-keys, k - 1)[:k]
        at += k
    y = _response(rng, user, item, users, items)
    return pd.DataFrame({"y": y, "user": user.astype(str), "item": item.astype(str)})


def uniform(seed: int = 1, rows: int = 1_000_000, levels: int = 50_000) -> pd.DataFrame:
    """``rows`` observations on uniformly drawn (a, b) pairs of two ``levels``-level factors."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, levels, rows)
    b = rng.integers(0, levels, rows)
    y = _response(rng, a, b, levels, levels)
    return pd.DataFrame({"y": y, "a": a.astype(str), "b": b.astype(str)})
