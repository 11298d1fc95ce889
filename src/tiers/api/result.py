"""`LmmResult`: the frozen fit with the methods that take options, and its renderings.

The numbers are `tiers.results.result.FitResult`'s; the methods here delegate to
`tiers.inference` and `tiers.report`, which sit above the result in the pipeline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import pandas as pd

from tiers._lazy import LazyModule
from tiers.api.aliases import StatsmodelsNames
from tiers.api.tested import DDFS, Ddf
from tiers.fitting import refit
from tiers.inference import intervals, weighted
from tiers.options import check_level, check_option

# What a fit and its summary do not use is imported by the method that does (a fresh process
# pays each module once, and a command that fits and prints pays none of these).
if TYPE_CHECKING:
    from tiers.inference import bootstrap as boot
    from tiers.inference import margins as margins_frames
    from tiers.inference import predict
    from tiers.inference import r2 as rsquared
    from tiers.inference import tidy as tidy_frames
    from tiers.inference.r2 import R2
    from tiers.report import json as report_json
    from tiers.report import lme4 as lme4_report
else:
    boot = LazyModule("tiers.inference.bootstrap")
    margins_frames = LazyModule("tiers.inference.margins")
    predict = LazyModule("tiers.inference.predict")
    rsquared = LazyModule("tiers.inference.r2")
    tidy_frames = LazyModule("tiers.inference.tidy")
    report_json = LazyModule("tiers.report.json")
    lme4_report = LazyModule("tiers.report.lme4")
from tiers.report import stata as stata_report

Style = Literal["stata", "lme4"]
STYLES: tuple[str, ...] = ("stata", "lme4")


def _check_flag(value: object, name: str, *, optional: bool = False) -> None:
    """Refuse a flag that is not True or False (``reml="no"`` is truthy: it would mean True)."""
    if not (isinstance(value, bool | np.bool_) or (optional and value is None)):
        allowed = "True, False or None" if optional else "True or False"
        raise TypeError(f"{name} must be {allowed}; got {value!r}")


def _check_run(*, seed: object, workers: object, progress: object) -> None:
    """Refuse a bootstrap seed, worker count or progress flag of the wrong type or range."""
    _check_flag(progress, "progress", optional=True)
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0
    ):
        raise ValueError(f"seed must be a non-negative integer or None; got {seed!r}")
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1
    ):
        raise ValueError(
            f"workers must be a positive integer (processes) or None (the available cores); "
            f"got {workers!r}"
        )


class LmmResult(StatsmodelsNames):
    """A fitted linear mixed model (see `tiers.results.result.FitResult` for its numbers).

    ``levels`` are the grouping factors (outermost first when nested); ``terms`` the random-effects
    terms in theta order; ``theta`` lme4's relative covariance factor parameters (for random
    intercepts ``theta_k = sd_k / sigma``).
    """

    def variance_shares(
        self,
        level: float = 0.95,
        method: str = "delta",
        *,
        n_boot: int = 1000,
        seed: int | None = None,
        workers: int | None = None,
        progress: bool | None = None,
    ) -> pd.DataFrame:
        """Each level's share of the unexplained variance and the cumulative ICCs (``estat icc``).

        The intervals stay inside [0, 1].

        ``method``: ``"delta"`` (delta method on the logit scale, Stata's; see `tiers.inference.shares`),
        ``"profile"`` (likelihood profile of each share on the fitted criterion; see
        `tiers.inference.profile`) or ``"bootstrap"`` (parametric bootstrap, percentile; ``n_boot``,
        ``seed``, ``workers``, ``progress`` as in `confint`). ``attrs`` carries the method and
        notes.
        """
        _check_run(seed=seed, workers=workers, progress=progress)
        if method != "delta":
            weighted.check_likelihood_based(self, f"variance_shares(method={method!r})")
        return intervals.variance_shares(
            self, level, method, n_boot=n_boot, seed=seed, workers=workers, progress=progress
        )

    # ----------------------------------------------------------------------------- inference --

    def r2(self) -> R2:
        """Marginal and conditional R-squared (Nakagawa & Schielzeth 2013; Johnson 2014).

        With random slopes the random effects' variance is averaged over the rows used, as R's
        ``performance::r2_nakagawa``; see `tiers.inference.r2`.
        """
        return rsquared.r2(self)

    def confint(
        self,
        method: str = "wald",
        level: float = 0.95,
        *,
        n_boot: int = 1000,
        seed: int | None = None,
        workers: int | None = None,
        progress: bool | None = None,
    ) -> pd.DataFrame:
        """Intervals for every variance parameter and fixed effect.

        Parameters
        ----------
        method : {"wald", "profile", "profile-ml", "bootstrap"}
            ``wald``: SDs on the log scale and correlations on Fisher's z scale with SEs from the
            observed information (Stata's), fixed effects normal. ``profile``: likelihood-profile
            intervals on the criterion the model was fitted with (REML profiles for REML fits).
            ``profile-ml``: profiles of the ML deviance after an ML refit, as lme4's
            ``confint(fit)``. ``bootstrap``: parametric bootstrap, percentile intervals.
        level : float
            In (0, 1).
        n_boot, seed, workers, progress
            Bootstrap replicates, random seed (replicates are reproducible from it whatever the
            number of workers), processes (default: the available cores) and whether to show a
            progress bar (default: when stderr is a terminal).

        Returns
        -------
        DataFrame
            ``name, estimate, lower, upper``, rows named as lme4 names them
            (``sd_(Intercept)|Subject``, ``cor_Days.(Intercept)|Subject``, ``sigma``, then the
            fixed effects). ``attrs``: ``method``, ``level``, ``criterion`` and ``notes`` (an SD
            estimated at zero has lower bound 0; a non-monotonic profile; bootstrap replicates
            that did not converge, counted and left out).

        Raises
        ------
        ValueError
            Unknown method or level outside (0, 1).
        """
        _check_run(seed=seed, workers=workers, progress=progress)
        if method == "bootstrap":
            weighted.check_bootstrap(self)
        elif method != "wald":
            weighted.check_likelihood_based(self, f"confint(method={method!r})")
        return intervals.confint(
            self, method, level, n_boot=n_boot, seed=seed, workers=workers, progress=progress
        )

    def bootstrap(
        self,
        n_boot: int = 1000,
        *,
        seed: int | None = None,
        workers: int | None = None,
        progress: bool | None = None,
    ) -> Any:
        """Parametric bootstrap replicates (`tiers.inference.bootstrap.BootstrapResult`).

        A new value on every call (the same one for the same ``seed``).
        """
        _check_run(seed=seed, workers=workers, progress=progress)
        weighted.check_bootstrap(self)
        return boot.bootstrap(self, n_boot=n_boot, seed=seed, workers=workers, progress=progress)

    def residual_intervals(self, method: str = "wald", level: float = 0.95) -> pd.DataFrame:
        """Intervals for the residual structure's parameters (phi, rho, SD ratios).

        Parameters
        ----------
        method : {"wald", "profile"}
            ``wald``: on the unconstrained scale, mapped back (nlme's ``intervals``), with the
            observed-information SE. ``profile``: where the profiled criterion (REML or ML, as
            fitted) rises by ``chi2_1(level)`` (`tiers.inference.residual_profile`).
        level : float

        Returns
        -------
        DataFrame
            ``name, estimate, lower, upper`` (and ``std_error`` for Wald); ``attrs``: method,
            level, notes.

        Raises
        ------
        TiersError
            The fit has no residual structure.
        """
        from tiers.inference.residual_profile import residual_intervals

        return residual_intervals(self, method, level)

    def ranef(self, cond_var: bool = True) -> dict[str, pd.DataFrame]:
        """Conditional modes of the random effects (BLUPs), lme4's ``ranef``.

        Per grouping factor a DataFrame indexed by level label (``"a:A"`` for nested factors) with
        one column per effect, and with ``cond_var`` the conditional SDs as ``<effect>_sd`` columns.
        See the engines' `conditional_modes`.

        Raises
        ------
        ValueError
            ``cond_var`` for a crossed design with more than
            `tiers.engine.sparse_modes.DENSE_LIMIT` random effects whose engine cannot give
            conditional SDs.
        """
        _check_flag(cond_var, "cond_var")
        return predict.ranef_frames(self, cond_var=cond_var)

    def predict(
        self,
        newdata: Any = None,
        *,
        re: str = "include",
        new_levels: str = "population",
        interval: bool = False,
        level: float = 0.95,
        na_action: str = "omit",
    ) -> pd.DataFrame:
        """Predictions for the fitted rows or ``newdata``.

        A DataFrame with column ``mean`` (and ``lower``, ``upper`` with ``interval``), indexed as
        the data: without ``newdata`` by the input's index of the rows used (so
        ``data["pred"] = res.predict()["mean"]`` aligns, whatever the order of the rows), with
        ``newdata`` by its index.

        Parameters
        ----------
        re : {"include", "exclude"}
            Add the groups' conditional modes, or predict at the population mean.
        new_levels : {"population", "error"}
            A group not seen in the fit gets the population prediction (its effect is 0), or
            raises a DataError naming the factor and level.
        interval : bool
            Prediction interval for a new observation: variance = fixed-effect uncertainty +
            the conditional variance of the group's effects (a seen group) or the full
            random-effect variance (an unseen group, or ``re="exclude"``) + sigma^2; see
            `tiers.inference.predict`.
        na_action : {"omit", "exclude"}
            lme4's names. Without ``newdata``: ``"omit"`` gives the rows used;
            ``"exclude"`` every row of the input, NaN for the rows dropped for missing values.
            With ``newdata``: ``"omit"`` leaves out the rows whose prediction is missing (a
            missing predictor), ``"exclude"`` keeps them as NaN.
        """
        _check_flag(interval, "interval")
        return predict.predict(
            self,
            newdata,
            re=re,
            new_levels=new_levels,
            interval=interval,
            level=level,
            na_action=na_action,
        )

    def fitted(self, na_action: str = "omit") -> pd.Series:
        """Fitted values X beta + Z b (lme4's ``fitted``), indexed by the input's row labels.

        ``na_action``: ``"omit"`` (the rows used) or ``"exclude"`` (every input row, NaN for
        those dropped for missing values; lme4's ``na.exclude``).
        """
        return self.predict(re="include", na_action=na_action)["mean"].rename("fitted")

    def residuals(self, na_action: str = "omit") -> pd.Series:
        """Response minus fitted values (lme4's ``residuals``), indexed by the input's row labels.

        ``na_action`` as in `fitted`.
        """
        return predict.residuals(self, na_action)

    def caterpillar(
        self, group: str, term: str = "(Intercept)", level: float = 0.95
    ) -> pd.DataFrame:
        """Conditional modes of one effect of ``group`` with intervals from the conditional SDs.

        Sorted by mode (a caterpillar plot's data): ``level, mode, lower, upper``.
        """
        return predict.caterpillar(self, group, term, level)

    def tidy(
        self,
        effects: tuple[str, ...] = ("fixed", "ran_pars"),
        *,
        level: float = 0.95,
        ddf: str = "normal",
    ) -> pd.DataFrame:
        """One long table of the estimates, as R's ``broom.mixed::tidy``.

        ``effects``: ``"fixed"`` (fixed effects), ``"ran_pars"`` (SDs and correlations, with
        observed-information SEs and Wald intervals), ``"ran_vals"`` (conditional modes and their
        conditional SDs). ``ddf``: ``"normal"`` (z), ``"satterthwaite"`` (t, lmerTest's df) or
        ``"kenward-roger"`` (t, pbkrtest's df and adjusted SE) for the fixed effects. See
        `tiers.inference.tidy.tidy`.
        """
        check_level(level)
        tests = None
        if ddf in DDFS[1:]:
            tests = self.coef_table(level, ddf=ddf)  # type: ignore[arg-type]
        return tidy_frames.tidy(self, effects=effects, level=level, ddf=ddf, tests=tests)

    def glance(self) -> pd.DataFrame:
        """One row of fit statistics, as R's ``broom.mixed::glance`` (with R-squared).

        See `tiers.inference.tidy.glance`.
        """
        return tidy_frames.glance(self)

    def augment(self) -> pd.DataFrame:
        """The rows used with ``fitted``, ``fixed`` and ``resid`` columns (broom.mixed's).

        See `tiers.inference.tidy.augment`.
        """
        return tidy_frames.augment(self)

    def margins(
        self,
        term: str,
        at: Any = None,
        *,
        kind: str = "predictive",
        level: float = 0.95,
        ddf: str = "normal",
    ) -> pd.DataFrame:
        """Predictive margins or average marginal effects of a fixed-effect variable.

        Stata's ``margins`` (``at()``, ``dydx()``) and R's emmeans: predictions of the fixed
        part with ``term`` set to each value of ``at`` (a factor: each level), averaged over the
        rows used; or (``kind="dydx"``) the mean derivative in ``term`` (a factor: each level
        against the first). Delta-method SEs from `vcov`; ``ddf`` ``"normal"`` (z),
        ``"satterthwaite"`` (t) or ``"kenward-roger"`` (t, with `vcov_kr`). See
        `tiers.inference.margins.margins`; plot with ``tiers.marginsplot``.
        """
        sat = self._satterthwaite if ddf == "satterthwaite" else None
        kr = self._kenward_roger if ddf == "kenward-roger" else None
        return margins_frames.margins(
            self, term, at, kind=kind, level=level, ddf=ddf, satterthwaite=sat, kenward_roger=kr
        )

    # ---------------------------------------------------------------------------- new fits --

    def refit(self, *, reml: bool) -> LmmResult:
        """Fit the same model to the same rows by the other criterion (a new result)."""
        _check_flag(reml, "reml")
        return cast(LmmResult, refit(self, reml=reml))

    # ------------------------------------------------------------------------------ output --

    def summary(
        self, style: Style = "stata", *, stddeviations: bool | None = None, ddf: Ddf | None = None
    ) -> str:
        """The summary as text, in Stata's ``mixed`` layout or lme4's (lmerTest's) ``summary``.

        Parameters
        ----------
        style : {"stata", "lme4"}
            ``"stata"``: 78 columns, Stata's names (``_cons``, factor levels under their
            variable, ``c.a#c.b``), the random effects as variances and covariances (Stata 13+)
            with the observed-information SEs and intervals, the LR test against the linear
            model, variance shares for intercept-only models. Intervals at the formula's
            ``level(#)`` (default 95%). ``"lme4"``: lmerTest's ``summary``: scaled residuals,
            random effects, fixed effects with Satterthwaite's df and ``Pr(>|t|)``, the
            correlation of the fixed effects.
        stddeviations : bool, optional
            Stata's layout only: SDs and correlations (``sd()``, ``corr()``, as the old
            ``xtmixed``) rather than variances and covariances. Default: the formula's
            ``stddeviations`` option (Stata syntax), else False.
        ddf : {"normal", "satterthwaite", "kenward-roger"}, optional
            The fixed effects' tests, as in `coef_table` (Stata's ``dfmethod()``: with t tests
            Stata's layout shows the df's range and a model F test instead of the Wald chi2).
            Default: the formula's ``dfmethod()`` (Stata syntax), else ``"normal"`` in Stata's
            layout and ``"satterthwaite"`` in lme4's (lmerTest's).
        """
        if style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}; got {style!r}")
        _check_flag(stddeviations, "stddeviations", optional=True)
        method = ddf if ddf is not None else self.formula.dfmethod
        if method is None:
            method = "satterthwaite" if style == "lme4" else "normal"
        check_option(method, DDFS, "ddf")
        if style == "lme4":
            # where singular or refused, lme4's plain table
            tests = None if method == "normal" else self._tests(ddf=method)
            v = self.vcov.to_numpy()
            se = np.sqrt(np.diag(v))
            with np.errstate(invalid="ignore", divide="ignore"):
                corr = v / np.outer(se, se)
            quartiles = self._residual_quartiles()
            return lme4_report.lme4(self, self.coef_table(), tests, corr, quartiles)

        level = self.formula.level or 0.95
        sdi, ci = self.sd_inference, self.corr_inference
        rinf = self.residual_inference
        robust = (
            self.robust.variance_at(self.design.terms, np.asarray(self.theta), self.sigma, level)
            if self.robust is not None and level != sdi.level
            else None
        )
        if robust is not None:
            sdi, ci = robust
        elif level != sdi.level:  # Stata's level(#): the same information, other quantiles
            sdi, ci, rinf = self.variance_at(level)
        shares = self.variance_shares(level) if self._one_residual_variance else None
        sd = self.formula.stddeviations if stddeviations is None else bool(stddeviations)
        table = self.coef_table(level, ddf=method)
        ftest = None
        slopes = [i for i, n in enumerate(self.xnames) if n != "(Intercept)"]
        if method != "normal" and slopes:
            L = np.eye(len(self.xnames))[slopes]
            ftest = self._ddf_tests(method, "the model F test").contest(L)
        return stata_report.stata(
            self,
            table,
            sdi,
            ci,
            shares,
            level=level,
            stddeviations=sd,
            residual=rinf,
            ftest=ftest,
        )

    @property
    def _one_residual_variance(self) -> bool:
        """Variance shares apply: intercepts only, and one residual variance (no SD by stratum)."""
        return self.intercepts_only and self.one_residual_variance

    def _residual_quartiles(self) -> list[float]:
        """Min, quartiles and max of the scaled residuals (lme4's summary)."""
        scaled = self.residuals().to_numpy() / self.sigma
        return np.quantile(scaled, [0.0, 0.25, 0.5, 0.75, 1.0]).tolist()

    def to_dict(self, *, kenward_roger: bool | None = None) -> dict[str, Any]:
        """The results as one JSON-able document (docs/json.schema.json, docs/json.md).

        With ``kenward_roger`` (default: when the formula asks for ``dfmethod(kroger)``) the
        document also holds Kenward-Roger's tests and adjusted covariance (``kenward_roger``).
        """
        _check_flag(kenward_roger, "kenward_roger", optional=True)
        shares = self.variance_shares() if self._one_residual_variance else None
        r2 = self.r2() if self.one_residual_variance else None  # one per stratum otherwise
        doc = report_json.result_dict(self, self._tests(), shares, r2=r2)
        if kenward_roger is None:
            kenward_roger = self.formula.dfmethod == "kenward-roger"
        if kenward_roger:
            doc["kenward_roger"] = report_json.kenward_roger_dict(
                self.coef_table(ddf="kenward-roger"), self.anova("kenward-roger"), self.vcov_kr
            )
        return doc

    def _tests(self, level: float = 0.95, ddf: str = "satterthwaite") -> pd.DataFrame | None:
        """`coef_table` with ``ddf``'s t tests, or None where singular or refused (a sandwich)."""
        if self.robust is not None and self.robust.kind == "robust":
            return None
        try:  # Satterthwaite's df need a Hessian; where it is singular they are null
            return self.coef_table(level, ddf=ddf)  # type: ignore[arg-type]
        except (np.linalg.LinAlgError, FloatingPointError):
            return None

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        crit = "REML crit" if self.reml else "deviance"
        status = "" if self.converged else ", NOT converged"
        return (
            f"<LmmResult {self.method} {self.engine}: {self.formula.text}, {self.nobs:,} obs, "
            f"{crit} {self.criterion:.1f}{status}>"
        )
