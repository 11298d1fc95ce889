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

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tiers.data.convert import keep_integers
from tiers.errors import DataError

READERS = (".csv", ".parquet", ".pq", ".dta")
WRITERS = (".csv", ".parquet", ".pq")

#: An integer written with a leading zero (``007``, ``-01``): a label, not a number.
LEADING_ZERO = r"^\s*[+-]?0[0-9]+\s*$"
#: An integer of more than 15 digits: float64 cannot hold every such integer exactly.
LONG_INTEGER = r"^\s*[+-]?[0-9]{16,}\s*$"


def read_data(
    path: str | Path,
    *,
    string_columns: Sequence[str] | None = None,
    sep: str | None = None,
    encoding: str | None = None,
) -> pd.DataFrame:
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
    sep : str, optional
        The CSV's field separator; by default it is read off the header line (a comma, or a
        semicolon, tab or ``|`` when the header has no comma but one of those), with a note.
    encoding : str, optional
        The CSV's text encoding; by default UTF-8, or Latin-1 (with a note) when the file is not
        valid UTF-8.

    Returns
    -------
    pandas.DataFrame
        ``attrs["notes"]`` (a list of str, possibly empty) says which columns were kept as text and
        why.

    Raises
    ------
    DataError
        The file does not exist, has another extension, cannot be parsed (a row with more or
        fewer fields than the header, a column name used twice), or lacks a column named in
        ``string_columns``.
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
            df = read_csv(path, named, notes, sep=sep, encoding=encoding)
        elif suffix in (".parquet", ".pq"):
            df = _read_parquet(path)
        else:
            df = read_stata(path, notes)
    except DataError:
        raise
    except UnicodeDecodeError as exc:
        raise DataError(
            f"cannot read {path.name!r}: it is not valid {exc.encoding} (byte "
            f"{exc.object[exc.start]:#x} past the first megabyte); pass encoding='latin-1' (or "
            "the file's encoding)"
        ) from None
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


def read_stata(path: Path, notes: list[str]) -> pd.DataFrame:
    """A Stata file with numeric variables kept numeric and their value labels kept as metadata.

    Converting labelled variables to categoricals (pandas' default) would turn ``educ`` 1 to 5
    into dummies and refuse a labelled numeric response; the labels go to
    ``attrs["value_labels"]`` (``{column: {value: label}}``) instead, for display. Text that is
    not valid UTF-8 (files written by Stata 13 or older in Latin-1) is decoded as Latin-1.
    """
    with pd.io.stata.StataReader(path, convert_categoricals=False) as reader:
        df = reader.read()
        labels = reader.value_labels()
        # which label set each variable uses: pandas keeps it only privately
        by_column = getattr(reader, "_lbllist", [])
        varlist = getattr(reader, "_varlist", list(df.columns))
        stored = getattr(reader, "_dtyplist", [])
    for name, dtype in zip(varlist, stored, strict=False):
        # an integer variable with a missing value comes back as float: ids stay integers
        if isinstance(dtype, np.dtype) and dtype.kind in "iu" and name in df.columns:
            if pd.api.types.is_float_dtype(df[name]):
                df[name] = df[name].astype(pd.Int64Dtype())
    value_labels: dict[str, dict[Any, str]] = {}
    for name, lbl in zip(varlist, by_column, strict=False):
        if lbl and lbl in labels and name in df.columns:
            value_labels[str(name)] = {
                (k.item() if isinstance(k, np.generic) else k): str(v)
                for k, v in labels[lbl].items()
            }
    for name in df.columns:
        col = df[name]
        if col.dtype == object and col.map(lambda v: isinstance(v, bytes)).any():
            df[name] = col.map(lambda v: v.decode("latin-1") if isinstance(v, bytes) else v)
            notes.append(f"{name}: text decoded as Latin-1 (not valid UTF-8)")
    df.attrs["value_labels"] = value_labels
    return df


def _read_parquet(path: Path) -> pd.DataFrame:
    """A Parquet file; categories of a file pandas did not write are sorted, as pandas sorts.

    pandas stores a categorical's categories in the file's metadata; other writers (polars, R's
    arrow) leave only the dictionary, in the order the writer met the values, so that order is an
    accident of the rows and is not kept (an ordered categorical, such as a polars ``Enum``, keeps
    its declared order).
    """
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    df = table.to_pandas()
    keep_integers(table, df)
    if table.schema.pandas_metadata is None:
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


def read_csv(
    path: Path,
    named: list[str],
    notes: list[str],
    *,
    sep: str | None = None,
    encoding: str | None = None,
) -> pd.DataFrame:
    """A CSV with ids kept as text: the named columns, and numeric-looking labels (see module).

    The separator and encoding are sniffed when not given (see `read_data`); a column name used
    twice and a row with more or fewer fields than the header are errors, never guessed around.
    """
    head = _head(path)
    if encoding is None:
        encoding = _encoding(head, path, notes)
    text = head.decode(encoding, errors="replace")
    # the first line only: splitting the whole megabyte into lines cost 2 ms
    header = (text.split("\n", 1)[0].splitlines() or [""])[0]
    if sep is None:
        sep = _separator(header, path, notes)
    names = _check_header(header, sep, path)
    kept = len(notes)
    try:
        return _read_csv_arrow(path, named, notes, sep, encoding)
    except DataError:
        raise
    except Exception:  # pyarrow's CSV reader is stricter; pandas' gives the clearer error
        del notes[kept:]
        _check_rows(path, names, sep, encoding)  # pandas would pad a short row with NaN
        return _read_csv_pandas(path, named, notes, sep, encoding)


_SEPARATORS = (";", "\t", "|")


def _head(path: Path, size: int = 1 << 20) -> bytes:
    with path.open("rb") as fh:
        return fh.read(size)


def _encoding(head: bytes, path: Path, notes: list[str]) -> str:
    """UTF-16 after its byte-order mark; UTF-8 when the start decodes as UTF-8; else Latin-1."""
    import codecs

    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        notes.append(f"{path.name!r} is UTF-16 (it starts with a byte-order mark)")
        return "utf-16"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError as exc:
        notes.append(
            f"{path.name!r} is not valid UTF-8 (byte {head[exc.start]:#x} at offset {exc.start}); "
            "read as Latin-1 (pass encoding= to choose another)"
        )
        return "latin-1"
    return "utf-8"


def _separator(header: str, path: Path, notes: list[str]) -> str:
    """A comma, unless the header has none but has a semicolon, tab or bar (then that one)."""
    if "," in header:
        return ","
    counts = {s: header.count(s) for s in _SEPARATORS}
    best = max(counts, key=lambda s: counts[s])
    if counts[best] == 0:
        return ","
    notes.append(
        f"{path.name!r}: fields separated by {best!r} (the header has no comma); pass sep= to "
        "choose another"
    )
    return best


def _check_header(header: str, sep: str, path: Path) -> list[str]:
    """The header's names; a name used twice is an error (pandas would rename, arrow pick one)."""
    import csv

    names = next(csv.reader([header], delimiter=sep), [])
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise DataError(
                f"{path.name!r} names the column {name!r} twice (fields {seen[name] + 1} and "
                f"{i + 1} of the header); rename one of them"
            )
        seen[name] = i
    return names


def _row_collector(bad: list[Any], count: list[int]) -> Callable[[Any], str]:
    """Pyarrow's invalid-row handler: skip the row, count it, keep the first for the message."""

    def invalid(row: Any) -> str:
        count[0] += 1
        if not bad:
            bad.append(row)
        return "skip"

    return invalid


def _check_rows(path: Path, names: list[str], sep: str, encoding: str) -> None:
    """Refuse a row with more or fewer fields than the header (every field read as text)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    bad: list[Any] = []
    count = [0]
    invalid = _row_collector(bad, count)

    pcsv.read_csv(
        path,
        read_options=pcsv.ReadOptions(encoding=encoding),
        parse_options=pcsv.ParseOptions(delimiter=sep, invalid_row_handler=invalid),
        convert_options=pcsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())),
    )
    if bad:
        raise _malformed(path, bad, count[0])


def _malformed(path: Path, bad: list[Any], total: int) -> DataError:
    row = bad[0]
    number = row.number if row.number is not None and row.number >= 0 else None
    if number is None:  # parallel reading does not know the line: find it
        with path.open("rb") as fh:
            for i, line in enumerate(fh, start=1):
                if line.rstrip(b"\r\n").decode("latin-1") == row.text or (
                    line.rstrip(b"\r\n").decode("utf-8", errors="replace") == row.text
                ):
                    number = i
                    break
    where = f"line {number}" if number is not None else "a row"
    return DataError(
        f"{path.name!r} is malformed: {where} has {row.actual_columns} fields where the header has "
        f"{row.expected_columns} ({row.text[:60]!r}){f'; {total:,} such rows' if total > 1 else ''}"
        "; fix those rows (a missing value is an empty field between separators)"
    )


def _read_csv_arrow(
    path: Path, named: list[str], notes: list[str], sep: str, encoding: str
) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    bad: list[Any] = []
    count = [0]
    invalid = _row_collector(bad, count)

    read = pcsv.ReadOptions(encoding=encoding)
    parse = pcsv.ParseOptions(delimiter=sep, invalid_row_handler=invalid)
    table = pcsv.read_csv(
        path,
        read_options=read,
        parse_options=parse,
        convert_options=pcsv.ConvertOptions(column_types=dict.fromkeys(named, pa.string())),
    )
    if bad:
        raise _malformed(path, bad, count[0])
    binary = [f.name for f in table.schema if pa.types.is_binary(f.type)]
    if binary and encoding.replace("-", "").lower() == "utf8":  # text past the sniffed start
        notes.append(
            f"{', '.join(binary)}: text that is not valid UTF-8, so {path.name!r} was read as "
            "Latin-1 (pass encoding= to choose another)"
        )
        return _read_csv_arrow(path, named, notes, sep, "latin-1")
    _check_named(pd.DataFrame(columns=table.column_names), named, path)
    labels = list(named)
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
            read_options=read,
            parse_options=pcsv.ParseOptions(delimiter=sep),
            convert_options=pcsv.ConvertOptions(
                include_columns=numeric, column_types=dict.fromkeys(numeric, pa.string())
            ),
        )
        for name in numeric:
            col = text.column(name)
            odd = _may_be_label(col)
            for pattern, why in ((LEADING_ZERO, "leading zeros"), (LONG_INTEGER, "over 15 digits")):
                hits = pc.match_substring_regex(odd, pattern)
                if pc.any(hits).as_py():
                    example = pc.filter(odd, hits)[0].as_py().strip()
                    notes.append(_note(name, why, example))
                    table = table.set_column(table.column_names.index(name), name, col)
                    labels.append(name)
                    break
            else:
                _note_missing_tokens(name, col, table[name], notes)
    df = table.to_pandas()
    keep_integers(table, df)  # integers with a missing value stay integers (nullable)
    for name in labels:  # an empty field is a missing label, not the label ""
        col = df[name]
        df[name] = col.where(col.isna() | (col.astype(str).str.strip() != ""), None)
    if sep == ";":
        _decimal_commas(df, notes)
    return df


def _may_be_label(text: Any) -> Any:
    """The fields of a column read as text that `LEADING_ZERO` or `LONG_INTEGER` could match.

    A match has two bytes or more, and it starts with a space, a sign or ``0`` (all before ``"1"``
    in byte order; fields starting past ``"9"`` are kept too) or has 16 bytes or more. The
    regular expressions, the slow part of reading ids (3-4 ms a column at 80,000 rows), then run
    on those fields only, in the file's order (none in a file of plain ids), so the first match
    quoted in the note is the same.
    """
    import pyarrow.compute as pc

    size = pc.binary_length(text)
    odd = pc.or_(
        pc.or_(pc.less(text, "1"), pc.greater_equal(text, ":")), pc.greater_equal(size, 16)
    )
    return pc.filter(text, pc.and_(pc.greater_equal(size, 2), odd))


#: An empty field is missing in every column; these are missing only in a numeric column.
NA_TOKENS = frozenset({"NA", "N/A", "NaN", "nan", "null", "NULL", "None", "#N/A", "-NaN", "-nan"})


def _note_missing_tokens(name: str, text: Any, values: Any, notes: list[str]) -> None:
    """Say which non-empty words (``NA``, ``null``) an integer column read as missing."""
    if not values.null_count:
        return
    words = [w for w in text.to_pylist() if w is not None and w.strip() in NA_TOKENS]
    if words:
        shown = ", ".join(repr(w) for w in dict.fromkeys(words))
        notes.append(
            f"{name}: {len(words):,} values read as missing ({shown}); if they are labels (ids), "
            f"pass string_columns=[{name!r}] (tiers fit: --string-col {name}) to keep them"
        )


DECIMAL_COMMA = r"^\s*[+-]?[0-9]*,[0-9]+\s*$"


def _decimal_commas(df: pd.DataFrame, notes: list[str]) -> None:
    """Text columns of a semicolon-separated file that are all decimal-comma numbers: numbers."""
    for name in df.columns:
        col = df[name]
        if pd.api.types.is_numeric_dtype(col) or isinstance(col.dtype, pd.CategoricalDtype):
            continue
        values = col.dropna().astype(str)
        if len(values) and values.str.match(DECIMAL_COMMA).all():
            df[name] = pd.to_numeric(
                col.astype(str).str.replace(",", ".", regex=False).where(col.notna())
            )
            notes.append(f"{name}: read as numbers with a decimal comma (e.g. {values.iloc[0]!r})")


def _read_csv_pandas(
    path: Path, named: list[str], notes: list[str], sep: str, encoding: str
) -> pd.DataFrame:
    options: dict[str, Any] = {"sep": sep, "encoding": encoding, "index_col": False}
    df = pd.read_csv(path, dtype=dict.fromkeys(named, str), **options)
    _check_named(df, named, path)
    numeric = [c for c in df.columns if c not in named and pd.api.types.is_numeric_dtype(df[c])]
    if not numeric:
        return df
    text = pd.read_csv(path, usecols=numeric, dtype=str, **options)
    whole = r"^\s*[+-]?[0-9]+\s*$"
    for name in numeric:  # integers with a missing value stay integers (nullable), not floats
        col = text[name].dropna()
        if pd.api.types.is_float_dtype(df[name]) and len(col) and col.str.match(whole).all():
            df[name] = df[name].astype(pd.Int64Dtype())
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
    from tiers._output import atomic_path

    # whole or absent: a full disk or Ctrl-C midway leaves no partial file (OutputError)
    with atomic_path(path, "file") as tmp:
        if suffix == ".csv":
            data.to_csv(tmp, index=False)
        else:
            data.to_parquet(tmp, index=False)
    return path
