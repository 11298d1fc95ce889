"""Figures of one fit (matplotlib, Agg; imported only when plotting).

Each function takes a fitted model and returns a `matplotlib.figure.Figure`; the numbers come from
`tiers.inference` (conditional modes, residuals, shares, profiles, per-group OLS) and the modules
here only draw them. `write_plots` writes the lot into a folder (``tiers fit ... --plots DIR``).
"""

from tiers.report.plots.fit import qq_residuals, residuals_fitted, shares, zeta
from tiers.report.plots.ranef import caterpillar, qq_ranef, shrinkage
from tiers.report.plots.write import KINDS, Kind, figure_of, write_plots

__all__ = [
    "KINDS",
    "Kind",
    "caterpillar",
    "figure_of",
    "qq_ranef",
    "qq_residuals",
    "residuals_fitted",
    "shares",
    "shrinkage",
    "write_plots",
    "zeta",
]
