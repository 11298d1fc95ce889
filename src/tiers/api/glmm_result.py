"""`GlmmResult`: what a user reads off a fitted GLMM (tables, intervals, modes, predictions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from tiers.design.design import Design
from tiers.engine.glm_family import Family
from tiers.engine.pirls import Glmm
from tiers.errors import DataError
from tiers.inference.predict import new_data_matrix
from tiers.inference.r2 import R2
from tiers.inference.r2_glmm import glmm_r2
from tiers.report import glmm as report
from tiers.results.glmm import GlmmFit
from tiers.results.lrtest import LRTest

Scale = Literal["link", "response"]
Style = Literal["stata", "lme4"]
Residual = Literal["deviance", "pearson", "response"]


def _level(level: float) -> float:
    if not isinstance(level, float | int) or not 0.0 < float(level) < 1.0:
        raise DataError(f"level must be a confidence level between 0 and 1; got {level!r}")
    return float(level)


@dataclass(frozen=True)
class GlmmResult:
    """A fitted generalized linear mixed model (`tiers.fit` with ``family=``).

    Attributes
    ----------
    fit : GlmmFit
        The frozen estimates (`tiers.results.glmm.GlmmFit`).
    design : Design
    family : Family
    problem : Glmm
        The objective's workspace (profiles evaluate it again).
    """

    fit: GlmmFit
    design: Design
    family: Family
    problem: Glmm = field(repr=False, compare=False)

    # -- numbers ---------------------------------------------------------------------------
    @property
    def fixef(self) -> pd.Series:
        """Fixed effects on the link scale."""
        return pd.Series(self.fit.beta, index=list(self.fit.xnames), name="estimate")

    @property
    def deviance(self) -> float:
        """Minus twice the (Laplace or quadrature) log-likelihood."""
        return self.fit.deviance

    @property
    def loglik(self) -> float:
        """The approximate log-likelihood."""
        return self.fit.loglik

    @property
    def aic(self) -> float:
        """Akaike's criterion."""
        return self.fit.aic

    @property
    def bic(self) -> float:
        """Schwarz's criterion."""
        return self.fit.bic

    @property
    def is_singular(self) -> bool:
        """Some SD estimated at zero."""
        return self.fit.is_singular

    @property
    def converged(self) -> bool:
        """The optimum is certified (zero gradient, positive curvature)."""
        return self.fit.opt.converged

    def coef_table(self, *, exponentiate: bool | None = None, level: float = 0.95) -> pd.DataFrame:
        """Fixed effects with Wald z tests and intervals.

        Parameters
        ----------
        exponentiate : bool, optional
            Odds ratios (binomial logit) / incidence-rate ratios (Poisson), with the standard
            error by the delta method as Stata reports it. Default: the formula's ``or``/``irr``.
        level : float
        """
        from scipy.stats import norm

        lv = _level(level)
        expo = self.fit.exponentiate if exponentiate is None else bool(exponentiate)
        if expo and self.fit.link not in ("logit", "log"):
            raise DataError(
                f"exponentiated coefficients are odds ratios for the logit link and rate ratios "
                f"for the log link; the {self.fit.link} link has no such reading"
            )
        b, se = self.fit.beta, self.fit.se
        z = b / se
        q = norm.ppf(0.5 + lv / 2.0)
        lo, hi = b - q * se, b + q * se
        out = pd.DataFrame(
            {
                "estimate": np.exp(b) if expo else b,
                "std_error": np.exp(b) * se if expo else se,
                "z": z,
                "p_value": 2.0 * norm.sf(np.abs(z)),
                "lower": np.exp(lo) if expo else lo,
                "upper": np.exp(hi) if expo else hi,
            },
            index=list(self.fit.xnames),
        )
        return out

    def confint(
        self, level: float = 0.95, method: Literal["wald", "profile"] = "wald"
    ) -> pd.DataFrame:
        """Intervals for the SDs of scalar random-effect terms and the fixed effects.

        ``wald``: estimate +- z SE (theta's SE for an SD, cut at 0); ``profile``: where the
        profiled deviance rises by the normal quantile squared (lme4's ``method = "profile"``;
        one optimisation per profile point, slower on large data).
        """
        from scipy.stats import norm

        lv = _level(level)
        if method not in ("wald", "profile"):
            raise DataError(f"method must be 'wald' or 'profile'; got {method!r}")
        q = norm.ppf(0.5 + lv / 2.0)
        f = self.fit
        x_hat = np.concatenate([f.theta, f.beta])
        se = np.concatenate([f.theta_se, f.se])
        k = f.theta.size
        names, index = [], []
        for info in self.design.term_infos:
            if info.q == 1:  # a scalar term's theta is its SD
                names.append(f"sd_{f.theta_names[info.start]}")
                index.append(info.start)
        names += list(f.xnames)
        index += list(range(k, k + f.beta.size))
        rows = {}
        for name, j in zip(names, index, strict=True):
            if method == "profile":
                from tiers.inference.glmm_profile import profile_interval

                rows[name] = profile_interval(
                    self.problem, f.nagq, x_hat, f.deviance, j, float(se[j]), lv
                )
            else:
                lo = x_hat[j] - q * se[j]
                rows[name] = (max(0.0, lo) if j < k else lo, x_hat[j] + q * se[j])
        pct = f"{100 * (1 - lv) / 2:g} %", f"{100 * (1 + lv) / 2:g} %"
        return pd.DataFrame.from_dict(rows, orient="index", columns=list(pct))

    def varcorr(self) -> pd.DataFrame:
        """Random-effect variances, SDs and correlations (link scale)."""
        rows = []
        for t in self.fit.terms:
            corr = t.corr
            for i, z in enumerate(t.znames):
                rows.append(
                    {
                        "group": t.group,
                        "term": z,
                        "variance": float(t.covariance[i, i]),
                        "sd": float(t.sd[i]),
                        "corr": [float(c) for c in corr[i, :i]],
                    }
                )
        return pd.DataFrame(rows)

    def ranef(self, cond_var: bool = True) -> dict[str, pd.DataFrame]:
        """Conditional modes per term, with conditional SDs (``condsd_<effect>``) when asked."""
        out = {}
        for t in self.fit.terms:
            df = pd.DataFrame(t.b, index=list(t.levels), columns=list(t.znames))
            if cond_var:
                for i, z in enumerate(t.znames):
                    df[f"condsd_{z}"] = np.sqrt(t.cond_var[:, i, i])
            out[t.group] = df
        return out

    def predict(
        self,
        newdata: Any = None,
        *,
        scale: Scale = "response",
        conditional: bool = True,
    ) -> np.ndarray:
        """Predictions on the link or response scale.

        Parameters
        ----------
        newdata : DataFrame, optional
            Rows to predict (their fixed part is coded as the fit's); default the fitted rows.
        scale : {"link", "response"}
        conditional : bool
            On the random effects' conditional modes (a new group gets zero), or marginal:
            on the response scale the population-averaged mean ``E[g^-1(x'beta + z'b)]``,
            integrated over ``b ~ N(0, Sigma)`` by 30-point Gauss-Hermite quadrature.
        """
        if scale not in ("link", "response"):
            raise DataError(f"scale must be 'link' or 'response'; got {scale!r}")
        if newdata is None:
            if conditional:
                eta = self.fit.eta
                return eta if scale == "link" else self.family.linkinv(eta)
            eta = self.fit.offset + self.design.frame.X @ self.fit.beta
            zvar = self._z_variance(None)
        else:
            frame = pd.DataFrame(newdata).reset_index(drop=True)
            X = new_data_matrix(
                self.design, self.design.formula.fixed, frame, tuple(self.fit.xnames), "fixed part"
            )
            eta = X @ self.fit.beta
            for expr in self.fit.offset_terms:
                from tiers.data.glm_response import evaluate

                eta = eta + evaluate(expr, frame, "offset")
            if conditional:
                eta = eta + self._random_part(frame)
                return eta if scale == "link" else self.family.linkinv(eta)
            zvar = self._z_variance(frame)
        if scale == "link":
            return eta
        z, w = np.polynomial.hermite_e.hermegauss(30)
        w = w / w.sum()
        sd = np.sqrt(zvar)
        return np.asarray(
            sum(wk * self.family.linkinv(eta + sd * zk) for zk, wk in zip(z, w, strict=True))
        )

    def _random_part(self, data: pd.DataFrame) -> np.ndarray:
        """Each new row's ``z' b`` at the conditional modes; a group not in the fit gets 0.

        Groups are matched by their labels (lme4's ``allow.new.levels = TRUE``).
        """
        total = np.zeros(len(data))
        for spec, t in zip(self.design.terms, self.fit.terms, strict=True):
            columns = list(spec.factor.columns)
            if len(columns) > 1 and spec.factor.name == ":".join(reversed(columns)):
                columns = columns[::-1]  # the labels' order (GroupingFactor.labels)
            missing = [c for c in columns if c not in data.columns]
            if missing:
                raise DataError(
                    f"newdata lacks the grouping column {missing[0]!r} of the term for "
                    f"{spec.name}; add it, or predict with conditional=False"
                )
            labels = data[columns[0]].astype(str).to_numpy()
            for c in columns[1:]:
                labels = np.char.add(np.char.add(labels, ":"), data[c].astype(str).to_numpy())
            index = {lab: i for i, lab in enumerate(t.levels)}
            pos = np.array([index.get(str(lab), -1) for lab in labels])
            b = np.where(pos[:, None] >= 0, t.b[np.maximum(pos, 0)], 0.0)
            Z = np.ones((len(data), 1)) if spec.intercept_only else self._new_z(spec, data)
            total += np.sum(Z * b, axis=1)
        return total

    def _z_variance(self, data: pd.DataFrame | None) -> np.ndarray:
        """Each row's ``z' Sigma z`` summed over terms (the marginal variance of its predictor)."""
        n = self.design.frame.nobs if data is None else len(data)
        total = np.zeros(n)
        for spec, t in zip(self.design.terms, self.fit.terms, strict=True):
            if spec.intercept_only:
                total += float(t.covariance[0, 0])
                continue
            Z = spec.Z if data is None else self._new_z(spec, data)
            total += np.einsum("ni,ij,nj->n", Z, t.covariance, Z)
        return total

    def _new_z(self, spec: Any, data: pd.DataFrame) -> np.ndarray:
        """A random term's columns on new data, coded as in the fit (learned transforms kept)."""
        expr = next(r.expr for r in self.design.formula.random if r.name == spec.name)
        return new_data_matrix(
            self.design, expr, data, spec.znames, f"random-effects term for {spec.name}"
        )

    def residuals(self, type: Residual = "deviance") -> np.ndarray:  # noqa: A002 (lme4's name)
        """Residuals at the conditional modes, as lme4's ``residuals(glmer_fit, type)``.

        ``deviance``: ``sign(y - mu) sqrt(d_i)``, ``d_i`` the row's contribution to the deviance;
        ``pearson``: ``(y - mu) sqrt(w) / sqrt(V(mu))``; ``response``: ``y - mu``. A binomial
        response is the proportion of successes, ``w`` its trials (McCullagh & Nelder 1989,
        sec. 2.4). Their sum of squares is (deviance) or estimates (Pearson) the conditional
        deviance; they are not normal for a 0/1 outcome, so no QQ reference applies.
        """
        if type not in ("deviance", "pearson", "response"):
            raise DataError(f"type must be 'deviance', 'pearson' or 'response'; got {type!r}")
        y, wt, mu = self.problem.y, self.problem.wt, self.fit.mu
        if type == "response":
            return y - mu
        if type == "pearson":
            return (y - mu) * np.sqrt(wt / self.family.variance(mu))
        d = np.maximum(self.family.dev_resid(y, mu, wt), 0.0)
        return np.sign(y - mu) * np.sqrt(d)

    def shares(self) -> pd.DataFrame:
        """Variance shares and ICCs on the latent scale (random intercepts).

        The latent residual variance is pi^2/3 (logit), 1 (probit) or pi^2/6 (cloglog); shares are
        of the latent response, not of the observed 0/1 outcome. For nested levels ``icc`` is the
        latent correlation of two observations in the same group of that level (the shares of
        that level and the levels it is nested in; Snijders & Bosker 2012, sec. 17.3); NaN for
        crossed factors and the residual.
        """
        resid = self.family.latent_variance
        if resid is None:
            raise DataError(
                "variance shares on a latent scale are defined for the binomial family (logit, "
                "probit, cloglog links); a Poisson model has no latent residual variance"
            )
        comps = {
            t.group: float(t.covariance[0, 0])
            for t in self.fit.terms
            if t.znames[0] == "(Intercept)"
        }
        total = sum(comps.values()) + resid
        nested = self.design.nested
        rows, above = [], 0.0
        for g, v in comps.items():  # nested designs list the levels outermost first
            above += v
            icc = above / total if nested else float("nan")
            rows.append(
                {"component": g, "variance": v, "share": v / total, "icc": icc, "scale": "latent"}
            )
        rows.append(
            {
                "component": f"latent residual ({self.family.link})",
                "variance": resid,
                "share": resid / total,
                "icc": float("nan"),
                "scale": "latent",
            }
        )
        return pd.DataFrame(rows)

    def r2(self) -> R2:
        """Marginal and conditional R-squared on the link scale (Nakagawa et al. 2017).

        The residual variance is the distribution's on the link scale: pi^2/3 (logit), 1
        (probit), pi^2/6 (cloglog), ``ln(1 + 1/lambda)`` (Poisson, ``lambda`` from the null
        model, which is refitted); see `tiers.inference.r2_glmm`. The numbers of R's
        ``performance::r2_nakagawa``.
        """
        return glmm_r2(self.fit, self.design, self.problem)

    # -- figures ---------------------------------------------------------------------------
    def plot(self, kind: str = "caterpillar") -> Any:
        """One figure of the fit, a `matplotlib.figure.Figure` (needs the ``plot`` extra).

        ``kind``: ``caterpillar`` (modes with conditional SDs), ``qq_ranef``,
        ``residuals_fitted`` (deviance residuals against the linear predictor) or ``shares``
        (latent scale, binomial); the others of a linear fit are refused with the reason
        (`tiers.report.plots.glmm`).
        """
        from tiers.report.plots import figure_of

        return figure_of(self, kind)

    def write_plots(self, folder: str | Path, *, fmt: str = "png") -> list[Path]:
        """Write every figure the model has into ``folder`` as ``<kind>.png`` (or ``.svg``)."""
        from tiers.report.plots import write_plots

        paths, _ = write_plots(self, folder, fmt=cast(Any, fmt), option="folder")
        return paths

    # -- rendering -------------------------------------------------------------------------
    def summary(self, style: Style = "stata", *, exponentiate: bool | None = None) -> str:
        """The fit as Stata's ``melogit``/``mepoisson`` (default) or lme4's ``glmer`` prints it."""
        if style == "lme4":
            return report.lme4_summary(self.fit, self.coef_table(exponentiate=False))
        if style == "stata":
            expo = self.fit.exponentiate if exponentiate is None else exponentiate
            return report.stata_summary(self.fit, self.coef_table(exponentiate=expo), expo)
        raise DataError(f"style must be 'stata' or 'lme4'; got {style!r}")

    def lr_glm(self) -> LRTest:
        """Likelihood-ratio test against the GLM without random effects (theta = 0).

        chibar2(01) for one variance parameter (Self & Liang 1987), else a conservative
        chi2(k), as for a linear fit's test against the linear model.
        """
        from scipy.special import chdtrc

        from tiers.engine.pirls import glm_irls

        p, fam = self.problem, self.family
        beta, _, _ = glm_irls(p.y, p.wt, p.offset, p.X, fam)
        dev0 = float(np.sum(fam.minus2loglik(p.y, fam.linkinv(p.offset + p.X @ beta), p.wt)))
        k, chi2 = self.fit.theta.size, max(dev0 - self.fit.deviance, 0.0)
        if k == 1:
            why = "one variance component on the boundary: a 50:50 mixture of chi2(0) and chi2(1)"
            return LRTest(chi2, 1, float(0.5 * chdtrc(1, chi2)), "chibar2(01)", why, "ML",
                          -0.5 * dev0, self.fit.loglik)  # fmt: skip
        why = f"{k} covariance parameters, some on the boundary: the chi2({k}) p-value is conservative"
        return LRTest(chi2, k, float(chdtrc(k, chi2)), f"chi2({k})", why, "ML", -0.5 * dev0,
                      self.fit.loglik, conservative=True)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The fit as one JSON-able document: a linear fit's fields and the GLMM's own.

        ``family``, ``link``, ``nAGQ``, ``approximation``, ``deviance`` and the latent-scale
        shares; see docs/json.md.
        """
        from tiers.report.glmm_json import glmm_dict

        slopes = any(t.znames != ("(Intercept)",) for t in self.fit.terms)
        latent = self.family.latent_variance
        shares = None if latent is None or slopes else self.shares()
        table = self.coef_table(exponentiate=False)
        return glmm_dict(self.fit, table, self.design, self.lr_glm(), shares, self.r2(), latent)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return (
            f"<GlmmResult {self.fit.family}/{self.fit.link} nAGQ={self.fit.nagq} "
            f"deviance={self.fit.deviance:.4f} nobs={self.fit.nobs}>"
        )
