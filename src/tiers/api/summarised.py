"""The result of a fit made from sufficient statistics (a Dask DataFrame, `tiers.scale`).

Everything read off the likelihood is the same as in memory: estimates, summaries, variance
shares, Wald and profile intervals, Satterthwaite's df, BLUPs per group, JSON. What needs the rows
again (fitted values, residuals, predictions on the data, the parametric bootstrap, which
simulates new responses on the rows) refuses with `tiers.design.summary.rows_needed`, rather than
pulling the rows to this process.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tiers.api.result import LmmResult
from tiers.design.summary import SummaryFrame, rows_needed
from tiers.design.terms import split_theta
from tiers.engine.gram_statistics import LeafGrams
from tiers.engine.statistics import NestedStatistics
from tiers.inference.r2 import R2

_BOOTSTRAP = ("bootstrap", "boot")


class SummarisedResult(LmmResult):
    """An `LmmResult` whose rows stay in the Dask DataFrame it was fitted to."""

    @property
    def y(self) -> Any:
        """Refused: the response of the rows used is not held."""
        raise rows_needed("the response vector")

    @property
    def X(self) -> Any:
        """Refused: the fixed-effects matrix of the rows used is not held."""
        raise rows_needed("the fixed-effects matrix")

    def r2(self) -> R2:
        """Marginal and conditional R-squared (`LmmResult.r2`), from the statistics.

        The variance of ``X beta`` over the rows is ``beta' C beta / (n - 1)`` with ``C`` the
        centred cross-product of X; a term's random variance averaged over the rows,
        ``tr(Sigma sum_i z_i z_i') / n``, reads ``sum_i z_i z_i'`` off the per-leaf cross-products.
        """
        frame = self.design.frame
        assert isinstance(frame, SummaryFrame)
        stats = frame.statistics
        grams = stats if isinstance(stats, LeafGrams) else None
        fixed = grams.fixed_part(grams.leaves.size) if grams is not None else stats
        assert isinstance(fixed, NestedStatistics)
        n, p = fixed.n, fixed.p
        mean = fixed.shift + fixed.colsum / max(n, 1)
        C = fixed.recentred(mean).dtd[:p, :p]
        beta = np.asarray(self.beta)
        var_fixed = float(beta @ C @ beta) / (n - 1) if n > 1 else 0.0
        terms = self.design.terms
        var_random, at = 0.0, 0
        sigma2 = self.sigma**2
        for term, th in zip(terms, split_theta(terms, np.asarray(self.theta)), strict=True):
            cov = sigma2 * term.cov.covariance(th)
            if grams is None:
                var_random += float(cov[0, 0])  # intercepts: z = 1 on every row
            else:
                zz = grams.gram[:, at : at + term.q, at : at + term.q].sum(axis=0) / n
                var_random += float(np.trace(cov @ zz))
            at += term.q
        var_residual = float(sigma2)
        total = var_fixed + var_random + var_residual
        return R2(
            marginal=var_fixed / total,
            conditional=(var_fixed + var_random) / total,
            var_fixed=var_fixed,
            var_random=var_random,
            var_residual=var_residual,
        )

    def _residual_quartiles(self) -> list[float]:
        return []  # the summary says they are not computed

    def predict(self, newdata: Any = None, **options: Any) -> pd.DataFrame:
        """Predictions for ``newdata`` (a pandas or polars DataFrame); see `LmmResult.predict`.

        Without ``newdata`` (predictions for the fitted rows) it refuses: the rows are not held.
        """
        if newdata is None:
            raise rows_needed("predict() on the fitted rows")
        return super().predict(newdata, **options)

    def fitted(self, na_action: str = "omit") -> pd.Series:
        """Refused: fitted values need the rows."""
        raise rows_needed("fitted()")

    def residuals(self, na_action: str = "omit") -> pd.Series:
        """Refused: residuals need the rows."""
        raise rows_needed("residuals()")

    def bootstrap(self, n_boot: int = 1000, **options: Any) -> Any:
        """Refused: the parametric bootstrap simulates responses on the rows."""
        raise rows_needed("the parametric bootstrap")

    def confint(self, method: str = "wald", level: float = 0.95, **options: Any) -> pd.DataFrame:
        """Intervals as `LmmResult.confint`; the bootstrap method refuses (it needs the rows)."""
        if method in _BOOTSTRAP:
            raise rows_needed("bootstrap intervals")
        return super().confint(method, level, **options)

    def variance_shares(self, level: float = 0.95, method: str = "delta", **options: Any) -> Any:
        """Shares as `LmmResult.variance_shares`; the bootstrap method refuses (it needs the rows)."""
        if method in _BOOTSTRAP:
            raise rows_needed("bootstrap intervals of the shares")
        return super().variance_shares(level, method, **options)
