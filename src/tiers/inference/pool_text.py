"""The text summary of a `tiers.inference.pool.PooledResult` (Stata's ``mi estimate`` layout)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tiers.inference.pool import PooledResult


def _g(x: float, width: int = 10) -> str:
    return f"{'.':>{width}}" if not np.isfinite(x) else f"{x:>{width}.4g}"


def pooled_summary(p: PooledResult) -> str:
    """Header, fixed effects (with df and FMI) and the back-transformed variance components."""
    pct = f"{p.level:.0%}"
    head = [
        f"Multiple-imputation estimates ({p.method})          Imputations       = {p.m:>8}",
        f"Model: {p.formula}",
        f"Number of obs per imputation = {p.nobs:,}",
        "",
        f"{'':<22}{'Coef.':>10}{'Std. err.':>10}{'t':>8}{'df':>10}{'P>|t|':>8}"
        f"{'[' + pct + ' conf.':>12}{'interval]':>11}{'FMI':>7}",
    ]
    rows = [
        f"{name[:21]:<22}{_g(r.estimate)}{_g(r.std_error)}{r.statistic:>8.2f}{r.df:>10.1f}"
        f"{r.p_value:>8.3f}{_g(r.conf_low, 12)}{_g(r.conf_high, 11)}{r.fmi:>7.3f}"
        for name, r in p.fixed.iterrows()
    ]
    var = [
        "",
        f"{'Random-effects parameters':<40}{'Estimate':>10}{'[' + pct + ' conf.':>12}"
        f"{'interval]':>11}{'FMI':>7}",
    ]
    for r in p.variance.itertuples():
        label = f"{r.group}: {r.term}"[:39]
        fmi = f"{r.fmi:>7.3f}" if np.isfinite(r.fmi) else f"{'.':>7}"
        var.append(f"{label:<40}{_g(r.estimate)}{_g(r.conf_low, 12)}{_g(r.conf_high, 11)}{fmi}")
    notes = ["", *(f"Note: {n}." for n in p.notes)]
    return "\n".join(head + rows + var + notes)
