"""The frozen result of a linear mixed model fit: its numbers, and what they were computed from.

Things without options are properties (``fixef``, ``vcov``, ``varcorr``, ``aic``); the variance
parameters' standard errors and the random effects' conditional modes are computed on first use
(`functools.cached_property`) from the result's own state: the `Design` and the criterion, from
which the engine is rebuilt when needed (after unpickling too). Inference with options and the
renderers are in `tiers.inference` and `tiers.report`; the public `tiers.LmmResult` adds them as
methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tiers._tails import chi2_sf, normal_quantile, normal_two_sided
from tiers._threads import single_thread_blas
from tiers.design.design import Design, LevelInfo, TermInfo
from tiers.engine.contract import Engine, TermModes
from tiers.engine.registry import build_engine
from tiers.formula.types import Formula
from tiers.optimize.minimize import OptSummary
from tiers.options import check_level
from tiers.results.lrtest import LRTest
from tiers.variance.information import CorrInference, SdInference, variance_inference
from tiers.variance.residual import ResidualInference, residual_inference

if TYPE_CHECKING:  # imported by the fit that asks for a sandwich or CR2 (`tiers.variance.vce`)
    from tiers.variance.robust import RobustVcov

FloatArray = NDArray[np.float64]

__all__ = ["FitResult", "FitState", "LevelInfo", "TermInfo"]


@dataclass(frozen=True)
class FitState:
    """What a result was computed from.

    The design, the criterion, and the response and fixed-effects matrix when they are not the
    design's (a bootstrap or simulation replicate).
    """

    design: Design
    reml: bool
    y: FloatArray | None = None
    X: FloatArray | None = None


@dataclass(frozen=True, eq=False)
class FitResult:
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
    lr_linear: LRTest
    notes: tuple[str, ...]
    warnings: tuple[str, ...]
    fit_seconds: float
    engine: str
    data_signature: tuple[float, float] = (0.0, 0.0)
    terms: tuple[TermInfo, ...] = ()
    robust: RobustVcov | None = None
    _state: FitState | None = field(default=None, repr=False)

    # ------------------------------------------------------------------------ state, pickling --

    @property
    def design(self) -> Design:
        """The rows and grouping structure the model was fitted to."""
        return self.state.design

    @property
    def state(self) -> FitState:
        """What the result was computed from (design, criterion, replicate data)."""
        if self._state is None:
            raise ValueError("this result was built without its design; refit it with tiers.fit")
        return self._state

    @property
    def y(self) -> FloatArray:
        """The response of the rows used."""
        st = self.state
        return st.design.frame.y if st.y is None else st.y

    @property
    def X(self) -> FloatArray:
        """The fixed-effects matrix of the rows used."""
        st = self.state
        return st.design.frame.X if st.X is None else st.X

    @cached_property
    def devfun(self) -> Engine:
        """The engine: this model's criterion as a function of theta (lme4's ``devfun``)."""
        st = self.state
        return build_engine(st.design, reml=st.reml, y=st.y, X=st.X)

    def __getstate__(self) -> dict[str, Any]:
        # the engine is a workspace rebuilt from the design on first use: not worth pickling
        state = dict(self.__dict__)
        state.pop("devfun", None)
        return state

    # ----------------------------------------------------------------------------- numbers --

    @cached_property
    def _variance(self) -> tuple[SdInference, CorrInference]:
        if self.robust is not None and self.robust.variance is not None:
            return self.robust.variance
        if self.design.residuals is not None:
            sdi, ci, _ = self.variance_at(0.95)
            return sdi, ci
        with single_thread_blas():
            return variance_inference(
                self.devfun, self.design.terms, np.asarray(self.theta), self.sigma
            )

    def variance_at(
        self, level: float
    ) -> tuple[SdInference, CorrInference, ResidualInference | None]:
        """SDs, correlations and the residual structure's parameters with Wald intervals.

        At confidence ``level``; the residual part is None without a residual structure.
        """
        with single_thread_blas():
            if self.design.residuals is None:
                sdi, ci = variance_inference(
                    self.devfun, self.design.terms, np.asarray(self.theta), self.sigma, level=level
                )
                return sdi, ci, None
            return residual_inference(
                self.devfun,
                self.design.residuals.params,
                self.design.terms,
                np.asarray(self.theta),
                self.sigma,
                level=level,
            )

    @cached_property
    def residual_inference(self) -> ResidualInference | None:
        """The residual structure's parameters (natural scale) with SEs and 95% Wald intervals.

        None without a residual structure.
        """
        return self.variance_at(0.95)[2] if self.design.residuals is not None else None

    @property
    def sd_inference(self) -> SdInference:
        """SDs of the random effects (then the residual) with observed-information SEs.

        With Wald intervals on the log scale (Stata's); computed on first use.
        """
        return self._variance[0]

    @property
    def corr_inference(self) -> CorrInference:
        """Correlations between a term's effects with SEs and Fisher-z intervals.

        No rows for random-intercept models; computed on first use.
        """
        return self._variance[1]

    @property
    def nested(self) -> bool:
        """The grouping factors nest (cumulative ICCs and tree algorithms apply)."""
        return self.design.nested

    @cached_property
    def _modes_var(self) -> list[TermModes]:
        return self._modes(cond_var=True)

    @cached_property
    def _modes_only(self) -> list[TermModes]:
        return self._modes(cond_var=False)

    def _modes(self, *, cond_var: bool) -> list[TermModes]:
        with single_thread_blas():
            return self.devfun.conditional_modes(
                np.asarray(self.theta), np.asarray(self.beta), self.sigma, cond_var=cond_var
            )

    def conditional_modes(self, *, cond_var: bool = True) -> list[TermModes]:
        """Conditional modes (and covariance blocks) of every term at the estimates, in theta order.

        Computed once per ``cond_var``.
        """
        return self._modes_var if cond_var else self._modes_only

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
        """Covariance matrix of the fixed effects: ``sigma^2 (X' V^-1 X)^-1``, or the robust one.

        The robust covariance (``robust``) when the fit asked for one (``vce=``, sampling weights).
        """
        if self.robust is not None:
            v = np.asarray(self.robust.vcov)
            return pd.DataFrame(v, index=list(self.xnames), columns=list(self.xnames))
        v = self.sigma**2 * np.asarray(self.unscaled_vcov)
        return pd.DataFrame(v, index=list(self.xnames), columns=list(self.xnames))

    @property
    def std_errors(self) -> pd.Series:
        """Standard errors of the fixed effects."""
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=list(self.xnames))

    def coef_table(self, level: float = 0.95) -> pd.DataFrame:
        """Coefficient, SE, z, P>|z| and normal-theory interval, as Stata's ``mixed`` shows."""
        check_level(level)
        est = self.fixef.to_numpy()
        se = self.std_errors.to_numpy()
        z = est / se
        q = normal_quantile(0.5 + level / 2.0)
        return pd.DataFrame(
            {
                "estimate": est,
                "std_error": se,
                "z": z,
                "p_value": normal_two_sided(z),
                "ci_lower": est - q * se,
                "ci_upper": est + q * se,
            },
            index=list(self.xnames),
        )

    @property
    def varcorr(self) -> pd.DataFrame:
        """Variance components: one row per random effect, then the residual (term ``""``).

        The random effects' rows follow the terms in theta order. Correlations are in
        `correlations`.
        """
        rows = [
            {"group": g, "term": t, "variance": sd**2, "sd": sd}
            for (g, t), sd in zip(self.sd_inference.names, self.sd_inference.sd, strict=True)
        ]
        return pd.DataFrame(rows)

    @property
    def correlations(self) -> pd.DataFrame:
        """Correlations between the effects of a term: group, term1, term2, correlation."""
        ci = self.corr_inference
        if not ci.names:
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
    def one_residual_variance(self) -> bool:
        """Every row has the same residual variance: no SD by stratum (``by()``, nlme's varIdent).

        Variance shares, ICCs and R-squared need it: with a variance per stratum there is one
        decomposition per stratum, not one for the model.
        """
        lay = self.design.residuals
        return lay is None or not lay.params.ratio_labels

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
        """Akaike's criterion from `loglik` (REML fits: from the REML log-likelihood, as lme4).

        NaN for a pseudo-likelihood (sampling weights), which is no likelihood to compare models by.
        """
        if self.engine == "pseudo":
            return float("nan")
        return self.criterion + 2.0 * self.n_params

    @property
    def bic(self) -> float:
        """Schwarz's criterion from `loglik` (NaN for a pseudo-likelihood, as `aic`)."""
        if self.engine == "pseudo":
            return float("nan")
        return self.criterion + np.log(self.nobs) * self.n_params

    @property
    def is_singular(self) -> bool:
        """True when a diagonal entry of theta is (numerically near) zero, as lme4's isSingular."""
        diag = np.array([d for t in self.terms for d in t.diagonal], dtype=bool)
        theta = np.asarray(self.theta)[: diag.size]  # a residual structure's parameters follow
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
        idx = [i for i, n in enumerate(self.xnames) if n != "(Intercept)"]
        if not idx:
            return None
        b = np.asarray(self.beta)[idx]
        v = self.vcov.to_numpy()[np.ix_(idx, idx)]
        chi2 = float(b @ np.linalg.solve(v, b))
        return chi2, len(idx), chi2_sf(chi2, len(idx))

    def deviance_ml(self) -> float:
        """The ML deviance at these estimates (lme4's ``deviance(fit, REML = FALSE)``)."""
        if not self.reml:
            return self.criterion
        return self.devfun.with_reml(False).deviance(np.asarray(self.theta))
