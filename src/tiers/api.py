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

from __future__ import annotations

import time
from functools import cached_property
from html import escape
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from tiers._threads import single_thread_blas
from tiers.design.design import Design, build_design
from tiers.engine.contract import Engine
from tiers.engine.registry import build_engine
from tiers.fitting import assemble as _assemble
from tiers.fitting import fit_design, refit, resolve_reml
from tiers.formula.types import Formula
from tiers.inference import bootstrap as boot
from tiers.inference import intervals, predict
from tiers.inference import satterthwaite as satt
from tiers.optimize.minimize import OptSummary, certify, optimize_theta
from tiers.options import check_level
from tiers.report import json as report_json
from tiers.report import text
from tiers.results.result import FitResult

Style = Literal["stata", "lme4"]
STYLES: tuple[str, ...] = ("stata", "lme4")

__all__ = [
    "LmmResult",
    "assemble",
    "deviance_function",
    "fit",
    "optimize_theta",
    "prepare",
]


class LmmResult(FitResult):
    """A fitted linear mixed model (see `tiers.results.result.FitResult` for its numbers).

    ``levels`` are the grouping factors (outermost first when nested); ``terms`` the random-effects
    terms in theta order; ``theta`` lme4's relative covariance factor parameters (for random
    intercepts ``theta_k = sd_k / sigma``).
    """

    @cached_property
    def _satterthwaite(self) -> satt.Satterthwaite:
        with single_thread_blas():
            return satt.Satterthwaite.from_result(self)

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
        return intervals.variance_shares(
            self, level, method, n_boot=n_boot, seed=seed, workers=workers, progress=progress
        )

    # ----------------------------------------------------------------------------- inference --

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
        return boot.bootstrap(self, n_boot=n_boot, seed=seed, workers=workers, progress=progress)

    def satterthwaite(self, level: float = 0.95) -> pd.DataFrame:
        """T tests of the fixed effects with Satterthwaite's degrees of freedom (lmerTest's method).

        Columns: estimate, std_error, df, t, p_value, ci_lower, ci_upper.
        """
        check_level(level)
        return satt.coef_table(self, self._satterthwaite, level)

    def anova(self) -> pd.DataFrame:
        """F test of each term of the fixed part (all its columns zero).

        With Satterthwaite's denominator df; by term: num_df, den_df, F, p_value. See
        `tiers.inference.satterthwaite`.
        """
        return satt.anova(self, self._satterthwaite)

    def ftest(self, L: Any) -> pd.Series:
        """F test of ``L beta = 0`` with Satterthwaite's denominator df.

        ``L`` is a term name of the fixed part (its columns), a contrast vector or a matrix with one
        row per contrast.
        """
        if isinstance(L, str):
            cols = satt.term_columns(self)
            if L not in cols:
                raise ValueError(f"term must be one of {', '.join(cols)}; got {L!r}")
            idx = cols[L]
            M = np.zeros((len(idx), len(self.xnames)))
            M[np.arange(len(idx)), idx] = 1.0
        else:
            M = np.atleast_2d(np.asarray(L, dtype=np.float64))
            if M.shape[1] != len(self.xnames):
                raise ValueError(
                    f"L must have {len(self.xnames)} columns (one per fixed effect); got {M.shape[1]}"
                )
        F, ndf, ddf, p = self._satterthwaite.contest(M)
        return pd.Series({"F": F, "num_df": ndf, "den_df": ddf, "p_value": p})

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
        return predict.ranef_frames(self, cond_var=cond_var)

    def predict(
        self,
        newdata: Any = None,
        *,
        re: str = "include",
        new_levels: str = "population",
        interval: bool = False,
        level: float = 0.95,
    ) -> pd.DataFrame:
        """Predictions for the fitted rows or ``newdata``.

        A DataFrame with column ``mean`` (and ``lower``, ``upper`` with ``interval``), indexed as
        the data.

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
        """
        return predict.predict(
            self, newdata, re=re, new_levels=new_levels, interval=interval, level=level
        )

    def fitted(self) -> pd.Series:
        """Fitted values of the rows used: X beta + Z b (lme4's ``fitted``)."""
        return self.predict(re="include")["mean"].rename("fitted")

    def residuals(self) -> pd.Series:
        """Response minus fitted values, for the rows used (lme4's ``residuals``)."""
        return pd.Series(self.y, name="residual") - self.fitted().to_numpy()

    def caterpillar(
        self, group: str, term: str = "(Intercept)", level: float = 0.95
    ) -> pd.DataFrame:
        """Conditional modes of one effect of ``group`` with intervals from the conditional SDs.

        Sorted by mode (a caterpillar plot's data): ``level, mode, lower, upper``.
        """
        return predict.caterpillar(self, group, term, level)

    # ---------------------------------------------------------------------------- new fits --

    def refit(self, *, reml: bool) -> LmmResult:
        """Fit the same model to the same rows by the other criterion (a new result)."""
        return cast(LmmResult, refit(self, reml=reml))

    # ------------------------------------------------------------------------------ output --

    def summary(self, style: Style = "stata") -> str:
        """The summary as text: ``"stata"`` (Stata's ``mixed`` layout) or ``"lme4"``."""
        if style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}; got {style!r}")
        if style == "lme4":
            return text.lme4(self)
        return text.stata(self, self.variance_shares() if self.intercepts_only else None)

    def to_dict(self) -> dict[str, Any]:
        """The results as one JSON-able document (docs/json.schema.json, docs/json.md)."""
        try:  # Satterthwaite's df need a Hessian; where it is singular they are null
            tests: pd.DataFrame | None = self.satterthwaite()
        except (np.linalg.LinAlgError, FloatingPointError):
            tests = None
        shares = self.variance_shares() if self.intercepts_only else None
        return report_json.result_dict(self, tests, shares)

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        return f"<pre>{escape(self.summary())}</pre>"


def fit(
    formula: str | Formula,
    data: Any,
    *,
    reml: bool | None = None,
    force: bool = False,
) -> LmmResult:
    """Fit a linear mixed model by REML (default, as lme4) or ML.

    Parameters
    ----------
    formula : str or Formula
        lme4 syntax (``"perform ~ tutoring + (1 | dist_id/school_id)"``, ``(x | g)``,
        ``(x || g)``, crossed ``(1 | a) + (1 | b)``) or Stata syntax (``"perform tutoring ||
        dist_id: || school_id: x, covariance(unstructured)"``, ``|| _all: R.factor``).
    data : pandas or polars DataFrame
    reml : bool, optional
        REML (True) or ML (False). Default: what the formula says (Stata's ``, mle``), else REML.
    force : bool
        Fit even when the diagnostics find the variance components not identified, or a declared
        child not nested in its parent; the warning is kept on the result.

    Returns
    -------
    LmmResult

    Raises
    ------
    FormulaError, DataError, NestingError
        With a message naming the column or term and what to do.
    """
    start = time.perf_counter()
    with single_thread_blas():
        design = build_design(formula, data, force=force)
        out = fit_design(design, reml=reml, start=start, result_type=LmmResult)
    return cast(LmmResult, out)


def prepare(formula: str | Formula, data: Any, *, force: bool = False) -> Design:
    """Stage 1 (lme4's ``lFormula``): model frame, grouping structure and engine, decided once.

    See `tiers.design.design.build_design`.
    """
    return build_design(formula, data, force=force)


def deviance_function(design: Design, *, reml: bool | None = None) -> Engine:
    """Stage 2 (lme4's ``mkLmerDevfun``): the engine, the criterion as a function of theta.

    ``reml`` defaults to what the formula says (Stata's ``, mle``), else REML.
    """
    return build_engine(design, reml=resolve_reml(design, reml))


def assemble(
    design: Design,
    opt: OptSummary | ArrayLike,
    *,
    reml: bool | None = None,
    engine: Engine | None = None,
    warn: bool = True,
) -> LmmResult:
    """Stage 4 (lme4's ``mkMerMod``): the result at the optimiser's theta, or at a theta given.

    Parameters
    ----------
    design : Design
    opt : OptSummary or array
        What `optimize_theta` returned, or a theta (then it is not optimised: the result's
        ``opt`` certifies whether it is an optimum of the criterion, and says it was given).
    reml : bool, optional
        The criterion (default: the formula's, else REML). Ignored when ``engine`` is given.
    engine : Engine, optional
        The engine `opt` came from (saves rebuilding it).
    warn : bool
        Emit the warnings (singular fit, not certified); they are kept on the result either way.
    """
    with single_thread_blas():
        if engine is None:
            engine = build_engine(design, reml=resolve_reml(design, reml))
        if not isinstance(opt, OptSummary):
            theta = np.asarray(opt, dtype=np.float64)
            if theta.shape != (engine.n_theta,):
                raise ValueError(
                    f"theta must have {engine.n_theta} entries for this design; got shape "
                    f"{theta.shape}"
                )
            opt = certify(engine, theta)
        out = _assemble(design, engine, opt, warn=warn, result_type=LmmResult)
        return cast(LmmResult, out)
