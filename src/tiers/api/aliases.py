"""statsmodels' names for a fit's numbers (aliases, for porting MixedLM code to tiers)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from tiers.api.tested import TestedFit


class StatsmodelsNames(TestedFit):
    """`TestedFit` with statsmodels' ``MixedLMResults`` names, each an alias of a tiers name."""

    if TYPE_CHECKING:  # defined by `tiers.LmmResult`

        def fitted(self, na_action: str = "omit") -> pd.Series:
            """X beta + Z b (`tiers.LmmResult.fitted`)."""

        def residuals(self, na_action: str = "omit") -> pd.Series:
            """Response minus fitted values (`tiers.LmmResult.residuals`)."""

        def ranef(self, cond_var: bool = True) -> dict[str, pd.DataFrame]:
            """Conditional modes (`tiers.LmmResult.ranef`)."""

    @property
    def params(self) -> pd.Series:
        """Alias of `fixef` (statsmodels' name): the fixed-effects estimates.

        statsmodels' ``MixedLMResults.params`` also holds the variance parameters; here they are in
        `varcorr` and `theta`.
        """
        return self.fixef

    @property
    def bse(self) -> pd.Series:
        """Alias of `std_errors` (statsmodels' name): standard errors of the fixed effects."""
        return self.std_errors

    @property
    def tvalues(self) -> pd.Series:
        """Alias of ``coef_table()["z"]`` (statsmodels' name): estimate / standard error."""
        return self.coef_table()["z"].rename("z")

    @property
    def pvalues(self) -> pd.Series:
        """Alias of ``coef_table()["p_value"]`` (statsmodels' name): two-sided normal p-values.

        Normal (z) p-values, as Stata's ``mixed`` and statsmodels' MixedLM give them; t tests with
        Satterthwaite's degrees of freedom (lmerTest's) are in `satterthwaite`.
        """
        return self.coef_table()["p_value"].rename("p_value")

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        """Alias of the normal intervals of `coef_table` (statsmodels' name and shape).

        Columns ``0`` (lower) and ``1`` (upper), one row per fixed effect, at level ``1 - alpha``.
        Intervals for the variance parameters, and profile or bootstrap ones, are in `confint`.
        """
        if not (isinstance(alpha, float | int) and 0.0 < float(alpha) < 1.0):
            raise ValueError(f"alpha must be strictly between 0 and 1 (e.g. 0.05); got {alpha!r}")
        table = self.coef_table(level=1.0 - float(alpha))
        return pd.DataFrame({0: table["ci_lower"], 1: table["ci_upper"]})

    @property
    def llf(self) -> float:
        """Alias of `loglik` (statsmodels' name); for REML fits the restricted log-likelihood."""
        return self.loglik

    @property
    def fittedvalues(self) -> pd.Series:
        """Alias of `fitted()` (statsmodels' name): X beta + Z b, by the input's row labels."""
        return self.fitted()

    @property
    def resid(self) -> pd.Series:
        """Alias of `residuals()` (statsmodels' name): response minus fitted values."""
        return self.residuals()

    def cov_params(self) -> pd.DataFrame:
        """Alias of `vcov` (statsmodels' name): the covariance matrix of the fixed effects.

        statsmodels' MixedLM also includes the variance parameters; their standard errors are in
        `sd_inference` and `corr_inference`.
        """
        return self.vcov

    @property
    def random_effects(self) -> dict[Any, pd.Series]:
        """Alias of ``ranef(cond_var=False)`` in statsmodels' shape: group label -> Series.

        Each Series holds one group's conditional modes, indexed by effect name (lme4's names:
        ``(Intercept)``, ``cses``; statsmodels calls the intercept ``Group``). The keys are the
        level labels as `ranef` writes them (text, ``"1224"``, where statsmodels keeps the data's
        values). statsmodels has one grouping factor; with several (nested or crossed) the keys are
        ``(factor, label)`` tuples, e.g. ``("school", "1224")``. `ranef` gives the same numbers as
        one DataFrame per factor.
        """
        frames = self.ranef(cond_var=False)
        several = len(frames) > 1
        out: dict[Any, pd.Series] = {}
        for factor, df in frames.items():
            values = df.to_numpy()
            effects = df.columns
            for label, row in zip(df.index, values, strict=True):
                out[(factor, label) if several else label] = pd.Series(
                    row, index=effects, name=label
                )
        return out
