"""Reading and writing data files: CSV, Parquet and Stata .dta, chosen by the file's extension.

Ids must survive as labels: read as numbers, ``007`` and ``7`` would become one group, and a
17-digit id would lose its last digits. So a CSV column whose values include an integer written
with leading zeros or with more than 15 digits (beyond float64's exact integers) is kept as text,
and the frame's ``attrs["notes"]`` says which and why; ``string_columns`` reads named columns as
text whatever they hold (Stata's ``stringcols()``, R's ``colClasses``). Parquet and Stata files
keep their stored types; the categories of a Parquet file that pandas did not write are sorted
(the order its writer met them in is an accident of the rows), so the reference level is the same
as for the file read with polars or written by pandas.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from tiers.errors import DataError

READERS = (".csv", ".parquet", ".pq", ".dta")
WRITERS = (".csv", ".parquet", ".pq")

#: An integer written with a leading zero (``007``, ``-01``): a label, not a number.
LEADING_ZERO = r"^\s*[+-]?0[0-9]+\s*$"
#: An integer of more than 15 digits: float64 cannot hold every such integer exactly.
LONG_INTEGER = r"^\s*[+-]?[0-9]{16,}\s*$"


def read_data(path: str | Path, *, string_columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a CSV, Parquet or Stata ``.dta`` file into a pandas DataFrame.

    Parameters
    ----------
    path : str or Path
        A file ending in ``.csv``, ``.parquet``, ``.pq`` or ``.dta``.
    string_columns : sequence of str, optional
        Columns to read as text (labels), whatever their values look like. In a CSV, columns of
        integers written with leading zeros (``007``) or with more than 15 digits are kept as text
        without being named here; ``attrs["notes"]`` of the frame lists them. In Parquet and Stata
        files the stored types are kept and the named columns are converted to text.

    Returns
    -------
    pandas.DataFrame
        ``attrs["notes"]`` (a list of str, possibly empty) says which columns were kept as text and
        why.

    Raises
    ------
    DataError
        The file does not exist, has another extension, cannot be parsed, or lacks a column named
        in ``string_columns``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise DataError(f"data file {str(path)!r} does not exist")
    if suffix not in READERS:
        raise DataError(f"cannot read {path.name!r}: use a file ending in {', '.join(READERS)}")
    named = list(dict.fromkeys(string_columns or ()))
    notes: list[str] = []
    try:
        if suffix == ".csv":
            df = _read_csv(path, named, notes)
        elif suffix in (".parquet", ".pq"):
            df = _read_parquet(path)
        else:
            df = pd.read_stata(path, convert_categoricals=True)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read {path.name!r}: {exc}") from None
    _check_named(df, named, path)
    if suffix != ".csv":
        for col in named:
            values = df[col]
            df[col] = values.where(values.isna(), values.astype(str))
    df.attrs["notes"] = notes
    df.attrs["source"] = path.name
    return df


def _read_parquet(path: Path) -> pd.DataFrame:
    """A Parquet file; categories of a file pandas did not write are sorted, as pandas sorts.

    pandas stores a categorical's categories in the file's metadata; other writers (polars, R's
    arrow) leave only the dictionary, in the order the writer met the values, so that order is an
    accident of the rows and is not kept (an ordered categorical, such as a polars ``Enum``, keeps
    its declared order).
    """
    import pyarrow.parquet as pq

    df = pd.read_parquet(path)
    if pq.read_schema(path).pandas_metadata is None:
        for name in df.columns:
            col = df[name]
            if isinstance(col.dtype, pd.CategoricalDtype) and not col.cat.ordered:
                df[name] = col.cat.reorder_categories(sorted(col.cat.categories))
    return df


def _check_named(df: pd.DataFrame, named: list[str], path: Path) -> None:
    missing = [c for c in named if c not in df.columns]
    if missing:
        shown = ", ".join(map(str, df.columns[:12])) + (", ..." if df.shape[1] > 12 else "")
        raise DataError(
            f"{path.name!r} has no column {missing[0]!r} to read as text (columns: {shown})"
        )


def _read_csv(path: Path, named: list[str], notes: list[str]) -> pd.DataFrame:
    """A CSV with ids kept as text: the named columns, and numeric-looking labels (see module)."""
    try:
        return _read_csv_arrow(path, named, notes)
    except DataError:
        raise
    except Exception:  # pyarrow's CSV reader is stricter; pandas' gives the clearer error
        notes.clear()
        return _read_csv_pandas(path, named, notes)


def _read_csv_arrow(path: Path, named: list[str], notes: list[str]) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    table = pcsv.read_csv(
        path, convert_options=pcsv.ConvertOptions(column_types=dict.fromkeys(named, pa.string()))
    )
    _check_named(pd.DataFrame(columns=table.column_names), named, path)
    # integers may be labels written with leading zeros; a float column can only hide an id too
    # long for float64 (an integer beyond int64 is read as a float)
    numeric = [
        f.name
        for f in table.schema
        if f.name not in named
        and (
            pa.types.is_integer(f.type)
            or (
                pa.types.is_floating(f.type)
                and (pc.max(pc.abs(table[f.name])).as_py() or 0) >= 1e15
            )
        )
    ]
    if numeric:
        text = pcsv.read_csv(
            path,
            convert_options=pcsv.ConvertOptions(
                include_columns=numeric, column_types=dict.fromkeys(numeric, pa.string())
            ),
        )
        for name in numeric:
            col = text.column(name)
            for pattern, why in ((LEADING_ZERO, "leading zeros"), (LONG_INTEGER, "over 15 digits")):
                hits = pc.match_substring_regex(col, pattern)
                if pc.any(hits).as_py():
                    example = pc.filter(col, hits)[0].as_py().strip()
                    notes.append(_note(name, why, example))
                    table = table.set_column(table.column_names.index(name), name, col)
                    break
    return table.to_pandas()


def _read_csv_pandas(path: Path, named: list[str], notes: list[str]) -> pd.DataFrame:
    df = pd.read_csv(path, dtype=dict.fromkeys(named, str))
    _check_named(df, named, path)
    numeric = [c for c in df.columns if c not in named and pd.api.types.is_numeric_dtype(df[c])]
    if not numeric:
        return df
    text = pd.read_csv(path, usecols=numeric, dtype=str)
    for name in numeric:
        col = text[name].dropna()
        for pattern, why in ((LEADING_ZERO, "leading zeros"), (LONG_INTEGER, "over 15 digits")):
            hits = col.str.match(pattern)
            if hits.any():
                notes.append(_note(name, why, str(col[hits].iloc[0]).strip()))
                df[name] = text[name]
                break
    return df


def _note(name: str, why: str, example: str) -> str:
    return (
        f"{name} kept as text: its values include integers with {why} (e.g. {example!r}), which "
        "as numbers would lose digits or merge labels; pass string_columns to choose yourself"
    )


def write_data(data: pd.DataFrame, path: str | Path) -> Path:
    """Write ``data`` as CSV or Parquet, by the extension of ``path``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITERS:
        raise DataError(f"cannot write {path.name!r}: use a file ending in {', '.join(WRITERS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        data.to_csv(path, index=False)
    else:
        data.to_parquet(path, index=False)
    return path
