"""Variance decomposition of a nested model: level shares and cumulative ICCs, with intervals.

Each level's share of the unexplained variance and the intraclass correlations in Stata's
``estat icc`` (cumulative) sense, with delta-method intervals on the logit scale.

For levels ``1..K`` (outermost first) with variances ``s_k^2`` and residual ``s^2``, and
``T = sum_k s_k^2 + s^2``:

* ``share_k = s_k^2 / T``: the part of the unexplained variance that sits at level k;
* ``icc_k = (s_1^2 + ... + s_k^2) / T``: the correlation of two observations in the same level-k
  unit (hence also in the same units above it), as ``estat icc`` reports for nested models.

Intervals: ``logit(x) +- z se``, with ``se`` from the delta method on the covariance of the log SDs
(Stata's method for ``estat icc``); back-transformed they stay inside (0, 1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tiers._tails import expit, normal_quantile
from tiers.errors import InferenceError
from tiers.options import check_level
from tiers.results.result import FitResult


def _logit_interval(
    value: float, grad_log_sd: np.ndarray, cov: np.ndarray, z: float
) -> tuple[float, float]:
    """Interval for ``value`` whose logit has gradient ``grad_log_sd`` in the log SDs."""
    if not (0.0 < value < 1.0) or np.isnan(cov).any():
        return (np.nan, np.nan)
    var = float(grad_log_sd @ cov @ grad_log_sd)
    if not var >= 0.0:
        return (np.nan, np.nan)
    centre = np.log(value / (1.0 - value))
    half = z * np.sqrt(var)
    return expit(float(centre - half)), expit(float(centre + half))


def _one_variance(res: FitResult, what: str) -> None:
    if not res.one_residual_variance:
        raise InferenceError(
            f"{what} is not defined for this model: its residual variance differs by stratum "
            f"({res.design.residuals.spec.describe()}), so the unexplained variance has one "  # type: ignore[union-attr]
            "decomposition per stratum; fit without by() for a single one"
        )


def variance_shares(res: FitResult, level: float = 0.95) -> pd.DataFrame:
    """One row per level (outermost first) and one for the residual.

    Columns: ``level, variance, share, share_lower, share_upper, icc, icc_lower, icc_upper``.
    The residual row has no ICC. Components estimated at zero have share 0 and no interval. For
    crossed factors the ICC of a factor is the correlation of two observations that share only its
    level: its share.
    """
    _one_variance(res, "a variance share or ICC")
    check_level(level)
    if not res.intercepts_only:
        raise ValueError(
            "variance shares are defined for random-intercept models: with random slopes the "
            "variance at a level depends on the covariate values, so it has no single share"
        )
    sdi = res.sd_inference
    var = np.asarray(sdi.sd, dtype=float) ** 2
    total = float(var.sum())
    K = len(var) - 1
    names = [group for group, _ in sdi.names[:-1]] if sdi.names else [lv.name for lv in res.levels]
    # Cumulative ICCs need nested levels, outermost first (theta order of the nested engines).
    # Two observations that share one level of a crossed factor (and nothing else) correlate by
    # that factor's share alone.
    nested = res.nested
    z = normal_quantile(0.5 + level / 2.0)
    free = var > 0
    cov = np.asarray(sdi.cov_log_sd)[np.ix_(free, free)]
    rows = []
    # zero components are not free and drop out of g; their 0/0 entries are never used
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(K + 1):
            share = var[k] / total
            # d logit(v_k / T) / d log sd_j = 2 [j == k] - 2 v_j [j != k] / (T - v_k)
            g = np.where(np.arange(K + 1) == k, 2.0, -2.0 * var / (total - var[k]))[free]
            s_lo, s_hi = _logit_interval(share, g, cov, z) if free[k] else (np.nan, np.nan)
            row = {
                "level": names[k] if k < K else "Residual",
                "variance": var[k],
                "share": share,
                "share_lower": s_lo,
                "share_upper": s_hi,
            }
            if k < K and not nested:
                row.update(icc=share, icc_lower=s_lo, icc_upper=s_hi)
            elif k < K:
                upto = np.arange(K + 1) <= k
                a = float(var[upto].sum())
                icc = a / total
                # d logit(A / T) / d log sd_j = 2 v_j / A [j <= k] - 2 v_j / (T - A) [j > k]
                gi = np.where(upto, 2.0 * var / a if a > 0 else 0.0, -2.0 * var / (total - a))[free]
                i_lo, i_hi = _logit_interval(icc, gi, cov, z)
                row.update(icc=icc, icc_lower=i_lo, icc_upper=i_hi)
            else:
                row.update(icc=np.nan, icc_lower=np.nan, icc_upper=np.nan)
            rows.append(row)
    return pd.DataFrame(rows)
