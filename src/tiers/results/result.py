"""Frozen results of a linear mixed model fit.

Things without options are properties (``fixef``, ``vcov``, ``varcorr``, ``aic``); things with
options are methods (``summary(style=)``, ``refit(reml=)``). A different inference is a new object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tiers.formula.parse import Formula
from tiers.optimize.minimize import OptSummary
from tiers.variance.sd import LinearLRTest, SdInference

if TYPE_CHECKING:
    from tiers.engine.nested_scalar import NestedProblem

FloatArray = NDArray[np.float64]
Style = Literal["stata", "lme4"]
STYLES: tuple[str, ...] = ("stata", "lme4")


def _readonly(a: Any) -> FloatArray:
    arr = np.array(a, dtype=np.float64)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, slots=True)
class LevelInfo:
    """One grouping level: its name, number of groups and observations per group."""

    name: str
    columns: tuple[str, ...]
    ngroups: int
    min_obs: int
    mean_obs: float
    max_obs: int
    implicit: bool


@dataclass(frozen=True, slots=True)
class TermInfo:
    """One random-effects term: its group, effects, covariance structure and theta entries."""

    group: str
    znames: tuple[str, ...]
    covariance: str
    start: int
    stop: int
    diagonal: tuple[bool, ...]

    @property
    def q(self) -> int:
        """Effects per group."""
        return len(self.znames)


@dataclass(frozen=True)
class LmmResult:
    """A fitted linear mixed model.

    ``levels`` are the grouping factors (outermost first when nested); ``terms`` the random-effects
    terms in theta order; ``theta`` lme4's relative covariance factor parameters (for random
    intercepts ``theta_k = sd_k / sigma``).
    """

    formula: Formula
    reml: bool
    nobs: int
    n_dropped: int
    xnames: tuple[str, ...]
    beta: FloatArray
    unscaled_vcov: FloatArray
    levels: tuple[LevelInfo, ...]
    theta: FloatArray
    sigma: float
    criterion: float
    opt: OptSummary
    lr_linear: LinearLRTest
    notes: tuple[str, ...]
    warnings: tuple[str, ...]
    fit_seconds: float
    engine: str
    data_signature: tuple[float, float] = (0.0, 0.0)
    terms: tuple[TermInfo, ...] = ()
    _var_inference: Any = field(default=None, repr=False, compare=False)
    _problem: NestedProblem | None = field(default=None, repr=False, compare=False)
    _refit_args: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    # ----------------------------------------------------------------------------- numbers --

    @property
    def sd_inference(self) -> SdInference:
        """SDs of the random effects (then the residual) with observed-information SEs and Wald
        intervals on the log scale (Stata's); computed on first use."""
        return self._var_inference.get()[0]

    @property
    def corr_inference(self) -> Any:
        """Correlations between a term's effects with SEs and Fisher-z intervals (None for
        random-intercept models); computed on first use."""
        return self._var_inference.get()[1]

    @property
    def method(self) -> str:
        """``"REML"`` or ``"ML"``."""
        return "REML" if self.reml else "ML"

    @property
    def fixef(self) -> pd.Series:
        """Fixed-effects estimates, by column name."""
        return pd.Series(np.asarray(self.beta), index=list(self.xnames), name="estimate")

    @property
    def vcov(self) -> pd.DataFrame:
        """Covariance matrix of the fixed effects: ``sigma^2 (X' V^-1 X)^-1``."""
        v = self.sigma**2 * np.asarray(self.unscaled_vcov)
        return pd.DataFrame(v, index=list(self.xnames), columns=list(self.xnames))

    @property
    def std_errors(self) -> pd.Series:
        """Standard errors of the fixed effects."""
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=list(self.xnames))

    def coef_table(self, level: float = 0.95) -> pd.DataFrame:
        """Coefficient, SE, z, P>|z| and normal-theory interval, as Stata's ``mixed`` shows."""
        from scipy import stats

        _check_level(level)
        est = self.fixef.to_numpy()
        se = self.std_errors.to_numpy()
        z = est / se
        q = stats.norm.ppf(0.5 + level / 2.0)
        return pd.DataFrame(
            {
                "estimate": est,
                "std_error": se,
                "z": z,
                "p_value": 2.0 * stats.norm.sf(np.abs(z)),
                "ci_lower": est - q * se,
                "ci_upper": est + q * se,
            },
            index=list(self.xnames),
        )

    @property
    def varcorr(self) -> pd.DataFrame:
        """Variance components: one row per random effect (terms in theta order), then the
        residual (term ``""``). Correlations are in `correlations`."""
        rows = [
            {"group": g, "term": t, "variance": sd**2, "sd": sd}
            for (g, t), sd in zip(self.sd_inference.names, self.sd_inference.sd, strict=True)
        ]
        return pd.DataFrame(rows)

    @property
    def correlations(self) -> pd.DataFrame:
        """Correlations between the effects of a term: group, term1, term2, correlation."""
        ci = self.corr_inference
        if ci is None or not ci.names:
            return pd.DataFrame(columns=["group", "term1", "term2", "correlation"])
        return pd.DataFrame(
            [
                {"group": g, "term1": a, "term2": b, "correlation": r}
                for (g, a, b), r in zip(ci.names, ci.estimate, strict=True)
            ]
        )

    @property
    def intercepts_only(self) -> bool:
        """Every random-effects term is a scalar intercept."""
        return all(t.znames == ("(Intercept)",) for t in self.terms)

    @property
    def ngroups(self) -> dict[str, int]:
        """Number of groups per grouping factor."""
        return {lv.name: lv.ngroups for lv in self.levels}

    @property
    def n_params(self) -> int:
        """Parameters counted by logLik's df: fixed effects, theta, and sigma."""
        return len(self.xnames) + len(self.theta) + 1

    @property
    def loglik(self) -> float:
        """Log-likelihood (REML fits: the restricted log-likelihood, as lme4's ``logLik``)."""
        return -0.5 * self.criterion

    @property
    def deviance(self) -> float:
        """-2 log-likelihood; for REML fits this is the REML criterion."""
        return self.criterion

    @property
    def reml_criterion(self) -> float | None:
        """-2 REML log-likelihood for REML fits (lme4's "REML criterion"); None for ML fits."""
        return self.criterion if self.reml else None

    @property
    def aic(self) -> float:
        """Akaike's criterion from `loglik` (REML fits: from the REML log-likelihood, as lme4)."""
        return self.criterion + 2.0 * self.n_params

    @property
    def bic(self) -> float:
        """Schwarz's criterion from `loglik`."""
        return self.criterion + np.log(self.nobs) * self.n_params

    @property
    def is_singular(self) -> bool:
        """True when a diagonal entry of theta is (numerically near) zero, as lme4's isSingular."""
        diag = np.array([d for t in self.terms for d in t.diagonal], dtype=bool)
        theta = np.asarray(self.theta)
        return (
            bool(np.any(theta[diag] < 1e-4))
            if diag.size == theta.size
            else bool(np.any(theta < 1e-4))
        )

    @property
    def converged(self) -> bool:
        """The optimizer's end point was certified (see ``opt.message``)."""
        return self.opt.converged

    @property
    def wald(self) -> tuple[float, int, float] | None:
        """Wald chi2 that all coefficients except the intercept are zero: (chi2, df, p)."""
        from scipy import stats

        idx = [i for i, n in enumerate(self.xnames) if n != "(Intercept)"]
        if not idx:
            return None
        b = np.asarray(self.beta)[idx]
        v = self.vcov.to_numpy()[np.ix_(idx, idx)]
        chi2 = float(b @ np.linalg.solve(v, b))
        return chi2, len(idx), float(stats.chi2.sf(chi2, len(idx)))

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
        """Each level's share of the unexplained variance and the cumulative ICCs (``estat icc``),
        with intervals that stay inside [0, 1].

        ``method``: ``"delta"`` (delta method on the logit scale, Stata's; see `tiers.shares`),
        ``"profile"`` (likelihood profile of each share on the fitted criterion; see
        `tiers.profile`) or ``"bootstrap"`` (parametric bootstrap, percentile; ``n_boot``,
        ``seed``, ``workers``, ``progress`` as in `confint`). ``attrs`` carries the method and
        notes.
        """
        from tiers.inference.intervals import variance_shares

        return variance_shares(
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
        from tiers.inference.intervals import confint

        return confint(
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
        """Parametric bootstrap replicates (`tiers.bootstrap.BootstrapResult`); cached per
        ``(n_boot, seed)`` when a seed is given."""
        from tiers.inference.bootstrap import bootstrap

        return bootstrap(self, n_boot=n_boot, seed=seed, workers=workers, progress=progress)

    def satterthwaite(self, level: float = 0.95) -> pd.DataFrame:
        """t tests of the fixed effects with Satterthwaite's degrees of freedom (lmerTest's
        method): estimate, std_error, df, t, p_value, ci_lower, ci_upper."""
        from tiers.inference.satterthwaite import coef_table

        _check_level(level)
        return coef_table(self, level)

    def anova(self) -> pd.DataFrame:
        """F test of each term of the fixed part (all its columns zero) with Satterthwaite's
        denominator df: num_df, den_df, F, p_value by term. See `tiers.satterthwaite`."""
        from tiers.inference.satterthwaite import anova

        return anova(self)

    def ftest(self, L: Any) -> pd.Series:
        """F test of ``L beta = 0`` with Satterthwaite's denominator df; ``L`` a term name of the
        fixed part (its columns), a contrast vector or a matrix with one row per contrast."""
        from tiers.inference.satterthwaite import Satterthwaite, term_columns

        if isinstance(L, str):
            cols = term_columns(self)
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
        F, ndf, ddf, p = Satterthwaite.from_result(self).contest(M)
        return pd.Series({"F": F, "num_df": ndf, "den_df": ddf, "p_value": p})

    def ranef(self, cond_var: bool = True) -> dict[str, pd.DataFrame]:
        """Conditional modes of the random effects (BLUPs), lme4's ``ranef``: per grouping factor a
        DataFrame indexed by level label (``"a:A"`` for nested factors) with one column per
        effect, and with ``cond_var`` the conditional SDs as ``<effect>_sd`` columns. See
        `tiers.ranef`.

        Raises
        ------
        ValueError
            ``cond_var`` for a crossed design with more than `tiers.ranef.DENSE_LIMIT` random
            effects whose engine cannot give conditional SDs.
        """
        from tiers.inference.predict import ranef_frames

        return ranef_frames(self, cond_var=cond_var)

    def predict(
        self,
        newdata: Any = None,
        *,
        re: str = "include",
        new_levels: str = "population",
        interval: bool = False,
        level: float = 0.95,
    ) -> pd.DataFrame:
        """Predictions for the fitted rows or ``newdata``: a DataFrame with column ``mean`` (and
        ``lower``, ``upper`` with ``interval``), indexed as the data.

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
            `tiers.predict`.
        """
        from tiers.inference.predict import predict

        return predict(self, newdata, re=re, new_levels=new_levels, interval=interval, level=level)

    def fitted(self) -> pd.Series:
        """Fitted values of the rows used: X beta + Z b (lme4's ``fitted``)."""
        return self.predict(re="include")["mean"].rename("fitted")

    def residuals(self) -> pd.Series:
        """Response minus fitted values, for the rows used (lme4's ``residuals``)."""
        prep = self._refit_args["prepared"]
        return pd.Series(prep.frame.y, name="residual") - self.fitted().to_numpy()

    def caterpillar(
        self, group: str, term: str = "(Intercept)", level: float = 0.95
    ) -> pd.DataFrame:
        """Conditional modes of one effect of ``group`` with intervals from the conditional SDs,
        sorted by mode (a caterpillar plot's data): ``level, mode, lower, upper``."""
        from tiers.inference.predict import caterpillar

        return caterpillar(self, group, term, level)

    def deviance_ml(self) -> float:
        """The ML deviance at these estimates (lme4's ``deviance(fit, REML = FALSE)``)."""
        if not self.reml or self._problem is None:
            return self.criterion
        return self._problem.with_reml(False).deviance(np.asarray(self.theta))

    # ---------------------------------------------------------------------------- new fits --

    def refit(self, *, reml: bool) -> LmmResult:
        """Fit the same model to the same rows by the other criterion (a new result)."""
        from tiers.fitting import fit

        return fit(self.formula, None, reml=reml, _prepared=self._refit_args)

    # ------------------------------------------------------------------------------ output --

    def summary(self, style: Style = "stata") -> str:
        """The summary as text: ``"stata"`` (Stata's ``mixed`` layout) or ``"lme4"``."""
        from tiers.report import text

        if style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}; got {style!r}")
        return text.stata(self) if style == "stata" else text.lme4(self)

    def to_dict(self) -> dict[str, Any]:
        """The results as one JSON-able document (schema in docs/json.md)."""
        from tiers.report.json import result_dict

        return result_dict(self)

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        from html import escape

        return f"<pre>{escape(self.summary())}</pre>"


class Deferred:
    """A value computed on first use and kept (the variance parameters' inference needs a
    Hessian: not worth paying for in fits whose SEs are never read, such as replicates)."""

    __slots__ = ("_fn", "_value")

    def __init__(self, fn: Any) -> None:
        self._fn = fn
        self._value: Any = None

    def get(self) -> Any:
        """The value, computing it once."""
        if self._value is None:
            self._value = self._fn()
            self._fn = None
        return self._value


def _check_level(level: float) -> None:
    if not (isinstance(level, float | int) and 0.0 < float(level) < 1.0):
        raise ValueError(f"level must be strictly between 0 and 1 (e.g. 0.95); got {level!r}")
