"""Figures of the fit as a whole: residuals, their QQ plot, variance shares, profile zeta traces."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tiers._lazy import stats
from tiers.inference.intervals import variance_shares
from tiers.inference.predict import residuals
from tiers.inference.zeta import zeta_profiles
from tiers.report.plots._canvas import figure, qq_panel
from tiers.results.result import FitResult

__all__ = ["qq_residuals", "residuals_fitted", "shares", "zeta"]

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Rows beyond which residuals against fitted values are drawn as hexagonal bins.
HEXBIN_ROWS = 5_000


def _scaled_residuals(res: FitResult) -> tuple[np.ndarray, np.ndarray]:
    r = residuals(res).to_numpy()
    return res.y - r, r / res.sigma


def residuals_fitted(res: FitResult) -> Figure:
    """Scaled residuals (residual / sigma) against fitted values, with binned means.

    The line joins the mean residual in 20 bins of the fitted values (equal counts): a trend or a
    curve in it is a misspecified mean, a funnel in the cloud unequal variances. A gentle rising
    line is expected with few rows per group: the conditional modes shrink towards zero, so the
    residuals of high groups stay positive (Hilden-Minton 1995; lme4's ``plot(m)`` shows the same).
    Above
    `HEXBIN_ROWS` rows the cloud is drawn as hexagonal bins (counts, log colour scale).
    """
    fitted, scaled = _scaled_residuals(res)
    fig, (ax,) = figure(1, width=5.5, height=4.0)
    if fitted.size > HEXBIN_ROWS:
        hb = ax.hexbin(fitted, scaled, gridsize=60, bins="log", cmap="Blues", mincnt=1)
        fig.colorbar(hb, ax=ax, label="rows (log scale)")
    else:
        ax.plot(fitted, scaled, "o", ms=2.5, alpha=0.5, color="C0", mec="none")
    order = np.argsort(fitted, kind="stable")
    bins = np.array_split(order, min(20, max(fitted.size // 5, 1)))
    ax.plot([fitted[b].mean() for b in bins], [scaled[b].mean() for b in bins], color="C1",
            lw=1.5, marker="o", ms=3, label="mean in 20 bins")  # fmt: skip
    ax.axhline(0.0, color="0.3", lw=0.8, ls=":")
    ax.set_xlabel("fitted value (X beta + Z b)", fontsize=9)
    ax.set_ylabel("scaled residual (residual / sigma)", fontsize=9)
    ax.set_title(f"Residuals against fitted values ({fitted.size:,} rows)", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    return fig


def qq_residuals(res: FitResult) -> Figure:
    """Normal QQ plot of the scaled residuals, against the line y = x."""
    _, scaled = _scaled_residuals(res)
    fig, (ax,) = figure(1, width=4.5, height=4.0)
    qq_panel(ax, scaled, "Scaled residuals against the normal distribution", line="identity")
    return fig


def shares(res: FitResult, level: float = 0.95, method: str = "delta") -> Figure:
    """Each level's share of the unexplained variance, with intervals (intercept-only models).

    ``method``: as `tiers.inference.intervals.variance_shares` (``delta``, ``profile``,
    ``bootstrap``).

    Raises
    ------
    ValueError
        The model has random slopes (a share is not defined), or an unknown method or level.
    """
    table = variance_shares(res, level, method)
    fig, (ax,) = figure(1, width=max(4.0, 1.1 * len(table) + 2.0), height=3.8)
    x = np.arange(len(table))
    share = table["share"].to_numpy()
    lo, hi = table["share_lower"].to_numpy(), table["share_upper"].to_numpy()
    ax.bar(x, share, color=[f"C{k % 10}" for k in range(len(table))], alpha=0.75)
    has = np.isfinite(lo) & np.isfinite(hi)
    ax.errorbar(x[has], share[has], yerr=[share[has] - lo[has], hi[has] - share[has]], fmt="none",
                ecolor="k", capsize=4, lw=1)  # fmt: skip
    for k in x:
        ax.text(k + 0.08, share[k] + 0.01, f"{share[k]:.1%}", ha="left", va="bottom", fontsize=8)
    ax.set_xticks(x, table["level"].astype(str).tolist(), fontsize=8, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of the variance", fontsize=9)
    ax.set_title(f"Variance shares, {level * 100:.10g}% intervals ({method})", fontsize=10)
    if not has.all():
        ax.text(0.99, 0.98, "no interval: component estimated at zero", ha="right", va="top",
                fontsize=7, color="0.4", transform=ax.transAxes)  # fmt: skip
    return fig


def zeta(res: FitResult, *, zeta_max: float = 2.6) -> Figure:
    """Profile zeta traces of the variance parameters (lme4's ``xyplot(profile(m))``).

    A straight trace: the Wald interval on that scale is accurate; a bent one: the profile
    interval (where the trace crosses the dashed lines) differs from it. The dashed lines mark
    the 95% and 99% critical values.
    """
    table = zeta_profiles(res, zeta_max=zeta_max)
    names = list(dict.fromkeys(table["parameter"]))
    fig, axes = figure(len(names), ncols=4, width=3.0, height=2.8)
    crit = [float(stats.norm.ppf(0.975)), float(stats.norm.ppf(0.995))]
    for ax, name in zip(axes, names, strict=True):
        sub = table[table["parameter"] == name]
        ax.plot(sub["value"], sub["zeta"], "-o", ms=2.5, color="C0")
        for c in crit:
            for s in (-1, 1):
                ax.axhline(s * c, color="0.5", lw=0.7, ls="--")
        ax.axhline(0.0, color="0.3", lw=0.6, ls=":")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("value", fontsize=8)
        ax.set_ylabel("zeta", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"Profile zeta of the variance parameters ({table.attrs['criterion']} criterion)",
                 fontsize=10)  # fmt: skip
    return fig
