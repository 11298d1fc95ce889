"""`tiers.read_data`: one file in memory, or many files lazily as a Dask DataFrame."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tiers.data import io


def read_data(
    path: str | Path,
    *,
    lazy: bool = False,
    string_columns: Sequence[str] | None = None,
    sep: str | None = None,
    encoding: str | None = None,
) -> Any:
    """Read a data file into a pandas DataFrame, or Parquet/CSV files lazily into a Dask one.

    Parameters
    ----------
    path : str or Path
        A ``.csv``, ``.parquet``, ``.pq`` or ``.dta`` file; with ``lazy``, also a folder of
        Parquet or CSV files or a glob (``'data/*.parquet'``).
    lazy : bool
        Return a `dask.dataframe.DataFrame` with one partition per file, for `tiers.fit` to reduce
        on a Dask cluster (`tiers.scale`); needs ``pip install tiers[scale]``.
    string_columns, sep, encoding
        See `tiers.data.io.read_data`. ``sep`` and ``encoding`` are for one file read in memory.

    Raises
    ------
    DataError
        See `tiers.data.io.read_data` and `tiers.scale.files.read_lazy`.
    ValueError
        ``sep`` or ``encoding`` with ``lazy``.
    """
    if not isinstance(lazy, bool):
        raise ValueError(f"lazy must be True or False; got {lazy!r}")
    if not lazy:
        return io.read_data(path, string_columns=string_columns, sep=sep, encoding=encoding)
    if sep is not None or encoding is not None:
        raise ValueError(
            "sep and encoding apply to one file read in memory; lazily read CSV files have "
            "their separator and encoding detected file by file"
        )
    from tiers.scale.files import read_lazy

    return read_lazy(path, string_columns=string_columns)
