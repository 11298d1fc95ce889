"""polars frames to pandas with the level order pandas would give, so the model is the same.

A polars ``Categorical`` orders its categories by when each string was first seen (an encoding
detail: the same file read twice in one session can differ), and ``to_pandas`` keeps that order, so
the first level, the reference of treatment contrasts, would depend on the row order. Here a
``Categorical`` becomes a pandas categorical with its categories sorted, as pandas makes one from
strings and as formulaic codes strings; an ``Enum`` keeps its declared order (pandas reads an
Enum column of a Parquet file in that order too); strings stay strings (coded in sorted order).
"""

from __future__ import annotations

from typing import Any

import pandas as pd


def polars_to_pandas(data: Any) -> pd.DataFrame:
    """A polars DataFrame as pandas, categorical levels in pandas' order (see the module)."""
    import polars as pl

    categorical = [n for n, dtype in data.schema.items() if isinstance(dtype, pl.Categorical)]
    out = data.to_pandas()
    for name in categorical:
        col = out[name]
        if isinstance(col.dtype, pd.CategoricalDtype):
            out[name] = col.cat.reorder_categories(sorted(col.cat.categories))
    return out
