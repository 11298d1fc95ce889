"""The public face of a fit: `fit`, the staged API, and `LmmResult` with its inference methods.

`LmmResult` is the frozen `tiers.results.result.FitResult` plus the methods that take options
(intervals, bootstrap, tests, random effects, predictions) and the renderings; they delegate to
`tiers.inference` and `tiers.report`, which sit above the result in the pipeline.

The staged API mirrors lme4's ``lFormula -> mkLmerDevfun -> optimizeLmer -> mkMerMod``::

    design = tiers.prepare(formula, data)            # rows, grouping, engine: decided once
    devfun = tiers.deviance_function(design, reml=True)
    opt = tiers.optimize_theta(devfun)               # or any theta of your own
    res = tiers.assemble(design, opt, reml=True)     # the same result tiers.fit returns
"""

from tiers.api.result import LmmResult
from tiers.api.stages import assemble, deviance_function, fit, prepare
from tiers.optimize.minimize import optimize_theta

__all__ = [
    "LmmResult",
    "assemble",
    "deviance_function",
    "fit",
    "optimize_theta",
    "prepare",
]
