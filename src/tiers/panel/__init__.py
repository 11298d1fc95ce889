"""Panel estimators as Stata's ``xtreg`` and R's plm: pooled OLS, fixed and random effects."""

from tiers.panel.estimators import PanelResult, fixed_effects, pooled_ols, random_effects
from tiers.panel.hausman import HausmanResult, hausman

__all__ = [
    "HausmanResult",
    "PanelResult",
    "fixed_effects",
    "hausman",
    "pooled_ols",
    "random_effects",
]
