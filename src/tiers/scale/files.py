"""Many Parquet or CSV files as one lazy `dask.dataframe`: one partition per file, checked first.

Each partition is read by the in-memory reader (`tiers.data.io.read_data`), so ids keep the same
types and labels as when one file is read whole. The files' schemas are compared before any row
is read (Parquet) or in the first pass (CSV column types); a disagreement names the file and the
column.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from tiers.data.io import read_data
from tiers.errors import DataError

LAZY_READERS = (".parquet", ".pq", ".csv")

#: The files of each lazy frame `read_lazy` made, by the frame's Dask name (partition i is file i).
SOURCES: dict[str, tuple[str, ...]] = {}


def require_dask() -> None:
    """Refuse, with the command that installs it, when Dask is not installed."""
    try:
        import dask.dataframe  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as exc:
        raise DataError(
            f"data larger than memory needs Dask ({exc}); install it with "
            "pip install 'tiers[scale]' (dask[distributed])"
        ) from None


def expand(path_or_glob: str | Path) -> list[Path]:
    """The files a path, a folder or a glob names, sorted; refuse none, or mixed kinds."""
    text = str(path_or_glob)
    path = Path(text)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in LAZY_READERS)
    else:
        files = sorted(Path(p) for p in glob.glob(text, recursive=True))
    if not files:
        raise DataError(
            f"no data files match {text!r}; give a Parquet or CSV file, a folder of them, or a "
            "glob such as 'data/*.parquet'"
        )
    kinds = {".parquet" if f.suffix.lower() == ".pq" else f.suffix.lower() for f in files}
    bad = [f for f in files if f.suffix.lower() not in LAZY_READERS]
    if bad:
        raise DataError(
            f"cannot read {bad[0].name!r} lazily: use files ending in {', '.join(LAZY_READERS)}"
        )
    if len(kinds) > 1:
        raise DataError(
            f"{text!r} matches both Parquet and CSV files; give files of one kind (e.g. "
            "'data/*.parquet')"
        )
    return files


def _parquet_schemas(files: list[Path]) -> None:
    """Every file has the first file's columns, with the same types."""
    import pyarrow.parquet as pq

    first = pq.read_schema(files[0])
    want = {f.name: f.type for f in first}
    for path in files[1:]:
        schema = pq.read_schema(path)
        have = {f.name: f.type for f in schema}
        missing = [c for c in want if c not in have]
        if missing:
            raise DataError(
                f"file {path.name!r} has no column {missing[0]!r} (it is in {files[0].name!r}); "
                "every file of a dataset needs the same columns"
            )
        extra = [c for c in have if c not in want]
        if extra:
            raise DataError(
                f"file {path.name!r} has a column {extra[0]!r} that {files[0].name!r} lacks; every "
                "file of a dataset needs the same columns"
            )
        for col, kind in want.items():
            if not _same_kind(str(kind), str(have[col])):
                raise DataError(
                    f"column {col!r} is {have[col]} in file {path.name!r} but {kind} in "
                    f"{files[0].name!r}; write it with one type in every file (ids as text or "
                    "as integers, not both)"
                )


def _same_kind(a: str, b: str) -> bool:
    """Types that read into the same pandas kind (int64 and int32 do; float and text do not)."""
    return kind_of_arrow(a) == kind_of_arrow(b)


def kind_of_arrow(name: str) -> str:
    """A coarse kind of an Arrow type name: integer, float, text, bool, categorical or other."""
    if name.startswith("dictionary"):
        return "categorical"
    if name.startswith(("int", "uint")):
        return "integer"
    if name.startswith(("float", "double", "halffloat", "decimal")):
        return "float"
    if name in ("string", "large_string", "utf8", "large_utf8", "string_view"):
        return "text"
    return name


def kind_of(series: pd.Series) -> str:
    """The same coarse kind for a pandas column (all-missing columns are any kind)."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return "categorical"
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_float_dtype(dtype):
        return "float" if series.notna().any() else "empty"
    return "text" if series.notna().any() else "empty"


def _read_one(path: str, string_columns: tuple[str, ...]) -> pd.DataFrame:
    df = read_data(path, string_columns=list(string_columns) or None)
    df.attrs = {}  # notes are gathered per file by the first pass, not carried by partitions
    return df


def read_lazy(path_or_glob: str | Path, *, string_columns: Sequence[str] | None = None) -> Any:
    """Parquet or CSV files as a lazy `dask.dataframe.DataFrame`, one partition per file.

    Parameters
    ----------
    path_or_glob : str or Path
        A file, a folder of ``.parquet``/``.csv`` files, or a glob (``'data/*.parquet'``).
    string_columns : sequence of str, optional
        Columns read as text whatever they hold (see `tiers.data.io.read_data`).

    Raises
    ------
    DataError
        No file matches, files of two kinds, or Parquet files whose columns or types disagree
        (naming the file and the column).
    """
    require_dask()
    import dask.dataframe as dd

    files = expand(path_or_glob)
    if files[0].suffix.lower() in (".parquet", ".pq"):
        _parquet_schemas(files)
    named = tuple(string_columns or ())
    meta = _read_one(str(files[0]), named).iloc[:0]
    ddf = dd.from_map(
        _read_one, [str(f) for f in files], args=[named], meta=meta, enforce_metadata=False
    )
    SOURCES[ddf._name] = tuple(f.name for f in files)
    return ddf


def source_names(ddf: Any) -> tuple[str, ...]:
    """Names for the partitions in messages: the file of each, else ``partition i``."""
    known = SOURCES.get(getattr(ddf, "_name", ""))
    if known is not None and len(known) == ddf.npartitions:
        return known
    return tuple(f"partition {i}" for i in range(ddf.npartitions))
