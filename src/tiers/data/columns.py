"""The fixed-effects model matrix held as its columns, assembled a block of rows at a time.

A fixed part that is a plain sum of numeric columns (``y ~ x1 + x2``, the large-data case) needs no
``n x p`` float64 copy: its columns are the data frame's own arrays and the intercept a constant
(`model_columns` codes a right-hand side). Whatever reads X a chunk at a time (the nested engine's
sufficient statistics, the design's checks) asks for `ColumnMatrix.rows`; whatever needs the whole
matrix (other engines, fitted values, residuals, predictions) asks for `ColumnMatrix.dense`, which
builds it and shares it while someone holds it. At 8 million rows and two columns that is 128 MB
not kept through the fit.

The frame's arrays are read-only views (pandas' copy-on-write): a later change to the caller's
DataFrame copies its own column and leaves these as they were, so X rebuilt later is X at the fit.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tiers.errors import FormulaError

FloatArray = NDArray[np.float64]

#: Rows per block of `ColumnMatrix.cross_product` and the column checks (8 MB of float64 for p = 1).
BLOCK_ROWS = 1 << 20


class ColumnMatrix:
    """An ``n x p`` float64 matrix given by its columns: 1-D arrays, or None for a column of ones.

    Parameters
    ----------
    columns : tuple of (array or None)
        Column ``j`` of X: a 1-D numeric array of ``n`` values (read as float64), or None for the
        intercept's ones.
    n : int
        Rows.
    held : array, optional
        The dense matrix itself, when it exists anyway (formulaic's, a replicate's): `dense`
        returns it and the columns are its views.
    """

    __slots__ = ("columns", "n", "_held", "_cache", "__weakref__")

    def __init__(
        self,
        columns: tuple[NDArray[Any] | None, ...],
        n: int,
        held: FloatArray | None = None,
    ) -> None:
        self.columns = columns
        self.n = n
        self._held = held
        self._cache: weakref.ref[FloatArray] | None = None

    @classmethod
    def of_array(cls, X: FloatArray) -> ColumnMatrix:
        """A matrix that exists already, held as it is."""
        X = np.asarray(X, dtype=np.float64)
        return cls(tuple(X[:, j] for j in range(X.shape[1])), X.shape[0], held=X)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, p)``."""
        return self.n, len(self.columns)

    @property
    def held(self) -> bool:
        """Whether the dense matrix is kept (not rebuilt on each `dense`)."""
        return self._held is not None

    def column(self, j: int) -> NDArray[Any]:
        """Column ``j`` in its own dtype (no float copy); the intercept as ones broadcast."""
        col = self.columns[j]
        if col is None:
            return np.broadcast_to(np.ones(1), (self.n,))
        return col

    def rows(self, a: int, b: int, out: FloatArray | None = None) -> FloatArray:
        """Rows ``a:b`` as a dense float64 block (written into ``out`` when given)."""
        block = np.empty((b - a, len(self.columns))) if out is None else out
        if self._held is not None:
            block[...] = self._held[a:b]
            return block
        for j, col in enumerate(self.columns):
            block[:, j] = 1.0 if col is None else col[a:b]
        return block

    def dense(self) -> FloatArray:
        """The whole matrix; built from the columns unless held or still held by a caller."""
        if self._held is not None:
            return self._held
        X = None if self._cache is None else self._cache()
        if X is None:
            X = self.rows(0, self.n)
            # shared while a caller keeps it (an engine, a loop over replicates), then freed
            self._cache = weakref.ref(X)
        return X

    def select(self, keep: list[int]) -> ColumnMatrix:
        """The columns ``keep``, in that order."""
        if self._held is not None:
            return ColumnMatrix.of_array(np.ascontiguousarray(self._held[:, keep]))
        return ColumnMatrix(tuple(self.columns[j] for j in keep), self.n)

    def cross_product(self) -> FloatArray:
        """``X'X``, a block of rows at a time (no ``n x p`` copy)."""
        p = len(self.columns)
        if self._held is not None:
            return self._held.T @ self._held
        out = np.zeros((p, p))
        step = max(1, BLOCK_ROWS // max(p, 1))
        buf = np.empty((min(step, self.n), p))
        for a in range(0, self.n, step):
            b = min(self.n, a + step)
            block = self.rows(a, b, buf[: b - a])
            out += block.T @ block
        return out

    def __getstate__(self) -> dict[str, Any]:
        # the weak reference is a cache and cannot be pickled
        return {"columns": self.columns, "n": self.n, "held": self._held}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.columns, self.n, self._held = state["columns"], state["n"], state["held"]
        self._cache = None


def model_columns(rhs: str, data: pd.DataFrame, *, what: str) -> tuple[ColumnMatrix, list[str]]:
    """The model matrix of a formulaic right-hand side, held as columns, with lme4-style names.

    A plain sum of numeric columns (the common case, and the large-data case) keeps the data's own
    arrays (no float copy, `tiers.data.columns`); anything else goes through formulaic.
    """
    terms = [t.strip() for t in rhs.split("+")]
    intercept = "0" not in terms and "-1" not in rhs.replace(" ", "")
    # a backticked column name (`1`, `my x`) is that column, never the intercept
    plain = [
        t[1:-1] if len(t) > 2 and t[0] == t[-1] == "`" and t[1:-1] in data.columns else t
        for t in terms
        if t not in ("0", "1")
    ]
    if all(t in data.columns and pd.api.types.is_numeric_dtype(data[t]) for t in plain):
        names = (["(Intercept)"] if intercept else []) + plain
        columns: list[NDArray[Any] | None] = [None] * intercept
        columns += [_numeric(data[t]) for t in plain]
        return ColumnMatrix(tuple(columns), len(data)), names
    from formulaic import model_matrix as fmm

    try:
        mm = fmm(rhs, data, na_action="ignore")
    except Exception as exc:
        raise FormulaError(f"cannot build the {what} ({rhs!r}): {exc}") from None
    names = ["(Intercept)" if c == "Intercept" else str(c) for c in mm.columns]
    return ColumnMatrix.of_array(np.asarray(mm, dtype=np.float64)), names


def _numeric(values: pd.Series) -> NDArray[Any]:
    """A numeric column's values as a numpy array of a numpy numeric dtype (a view when it is one)."""
    arr = values.to_numpy()
    return arr if arr.dtype.kind in "iufb" else values.to_numpy(dtype=np.float64)
