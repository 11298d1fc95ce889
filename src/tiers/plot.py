"""Figures of a fit, each a `matplotlib.figure.Figure` (install the ``plot`` extra: matplotlib).

>>> import tiers
>>> res = tiers.fit("Reaction ~ Days + (Days | Subject)", data)
>>> fig = tiers.plot.caterpillar(res)          # or res.plot("caterpillar")
>>> fig.savefig("caterpillar.png")
>>> tiers.plot.write_plots(res, "plots/")      # every figure, as ``tiers fit ... --plots DIR``

* `caterpillar`: conditional modes with intervals per grouping factor and effect, sorted;
* `qq_ranef`, `qq_residuals`: normal QQ plots of the modes and of the scaled residuals;
* `residuals_fitted`: scaled residuals against fitted values;
* `shrinkage`: conditional modes against per-group OLS estimates;
* `shares`: each level's share of the variance with intervals (random-intercept models);
* `zeta`: profile zeta traces of the variance parameters (lme4's ``xyplot(profile(m))``).
"""

from tiers.report.plots import (
    KINDS,
    caterpillar,
    figure_of,
    qq_ranef,
    qq_residuals,
    residuals_fitted,
    shares,
    shrinkage,
    write_plots,
    zeta,
)

__all__ = [
    "KINDS",
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
