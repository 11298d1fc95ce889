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
    integers = [
        n for n, dtype in data.schema.items() if dtype.is_integer() and data[n].null_count()
    ]
    if integers:  # ids with a missing value: nullable integers, never rounded floats
        keep_integers(data.select(integers).to_arrow(), out)
    for name in categorical:
        col = out[name]
        if isinstance(col.dtype, pd.CategoricalDtype):
            out[name] = col.cat.reorder_categories(sorted(col.cat.categories))
    return out


def keep_integers(table: Any, out: pd.DataFrame) -> None:
    """Put the integer columns of an Arrow ``table`` that have nulls into ``out`` as nullable ints.

    Arrow's ``to_pandas`` turns an integer column with a missing value into float64, which rounds
    integers beyond 2**53: 18-digit ids would merge. pandas' ``Int64``/``UInt64`` keep them.
    """
    import pyarrow as pa

    for field in table.schema:
        if pa.types.is_integer(field.type) and table[field.name].null_count:
            target = (
                pd.UInt64Dtype() if pa.types.is_unsigned_integer(field.type) else pd.Int64Dtype()
            )
            mapped = table.select([field.name]).to_pandas(types_mapper={field.type: target}.get)
            out[field.name] = mapped[field.name].set_axis(out.index)
