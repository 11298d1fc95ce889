"""Reading and writing data files: CSV, Parquet and Stata .dta, chosen by the file's extension."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tiers.errors import DataError

READERS = (".csv", ".parquet", ".pq", ".dta")
WRITERS = (".csv", ".parquet", ".pq")


def read_data(path: str | Path) -> pd.DataFrame:
    """Read a CSV, Parquet or Stata ``.dta`` file into a pandas DataFrame.

    Raises
    ------
    DataError
        The file does not exist, has another extension, or cannot be parsed.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise DataError(f"data file {str(path)!r} does not exist")
    if suffix not in READERS:
        raise DataError(f"cannot read {path.name!r}: use a file ending in {', '.join(READERS)}")
    try:
        if suffix == ".csv":
            try:
                return pd.read_csv(path, engine="pyarrow")
            except Exception:  # pyarrow's CSV reader is stricter; pandas' gives the clearer error
                return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_stata(path, convert_categoricals=True)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read {path.name!r}: {exc}") from None


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
