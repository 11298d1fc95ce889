"""A model frame known through sufficient statistics only: rows never held in one process.

A fit of a Dask DataFrame (`tiers.scale`) reduces the rows to the statistics the engine needs
(`tiers.engine.statistics.NestedStatistics`). Its frame keeps what the reports read (rows used
and dropped, the fixed-effects names, notes) and, as ``data``, one row per innermost group (the
distinct id tuples, which is what the grouping factors, the nesting checks and the BLUP labels
need). ``y`` and ``X`` are empty: whatever needs the rows again refuses (`rows_needed`).
"""

from __future__ import annotations

from dataclasses import dataclass

from tiers.data.frame import ModelFrame
from tiers.errors import DataError


@dataclass(frozen=True)
class SummaryFrame(ModelFrame):
    """A `ModelFrame` whose rows are summarised, not held.

    Attributes
    ----------
    n_used : int
        Rows used (the frame's ``nobs``).
    y_signature : tuple of float
        The sum and sum of squares of the response (`tiers.design.design.signature`).
    y_absmax : float
        The largest absolute response (the scale of the exact-fit check).
    statistics : object
        The engine's sufficient statistics (a `tiers.engine.statistics.NestedStatistics`).
    """

    n_used: int = 0
    y_signature: tuple[float, float] = (0.0, 0.0)
    y_absmax: float = 0.0
    statistics: object = None

    @property
    def nobs(self) -> int:
        """Number of rows used."""
        return self.n_used


def rows_needed(what: str) -> DataError:
    """The error for a computation that needs the rows of a fit made from statistics."""
    return DataError(
        f"{what} needs the rows, and this model was fitted from the sufficient statistics of a "
        "Dask DataFrame, which never brings its rows to one process. Fit the computed data "
        "instead (tiers.fit(formula, ddf.compute())) when it fits in memory, or compute it with "
        "Dask from the estimates (fixef, ranef)"
    )
