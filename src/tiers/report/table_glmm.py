"""A GLMM's column in a publication table (`tiers.report.table`).

The rows of a linear fit's column, from a `tiers.GlmmResult`: coefficients on the link scale (or
exponentiated, odds / rate ratios with delta-method SEs as Stata's ``eform``), the random-effect
SDs and correlations, latent-scale ICCs for binomial random-intercept models (residual pi^2/3,
1 or pi^2/6; Snijders & Bosker 2012, sec. 17.3), Nakagawa et al.'s (2017) R-squared, N, groups,
deviance, log-likelihood, AIC and BIC.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import pandas as pd

from tiers.inference.r2 import R2
from tiers.results.glmm import GlmmFit

Cells = dict[tuple[str, str], tuple[str, str]]
#: What an exponentiated coefficient is, by link.
RATIOS = {"logit": "odds ratios", "log": "rate ratios"}


class GlmmLike(Protocol):
    """What the table reads off a fitted GLMM (`tiers.api.glmm_result.GlmmResult`)."""

    fit: GlmmFit

    def coef_table(self, *, exponentiate: bool | None = ..., level: float = ...) -> pd.DataFrame:
        """Fixed effects with Wald z tests and intervals."""
        ...

    def varcorr(self) -> pd.DataFrame:
        """Random-effect variances, SDs and correlations."""
        ...

    def shares(self) -> pd.DataFrame:
        """Latent-scale variance shares and ICCs."""
        ...

    def r2(self) -> R2:
        """Marginal and conditional R-squared."""
        ...


def is_glmm(res: Any) -> bool:
    """Whether ``res`` is a fitted GLMM (it carries a `GlmmFit`)."""
    return isinstance(getattr(res, "fit", None), GlmmFit)


def glmm_method(fit: GlmmFit) -> str:
    """The estimation method a note names."""
    return "ML (Laplace)" if fit.nagq == 1 else f"ML (adaptive quadrature, {fit.nagq} points)"


def glmm_column(
    res: GlmmLike,
    *,
    statistic: str,
    stars: bool,
    level: float,
    exponentiate: bool,
    digits: int,
    fmt: Callable[[float, int], str],
    marks: Callable[[float], str],
) -> tuple[Cells, list[str]]:
    """One GLMM's cells by (section, label) and its notes (family, link, scale of the numbers)."""
    f = res.fit
    cells: Cells = {}
    coefs = res.coef_table(exponentiate=exponentiate, level=level)
    for term, r in coefs.iterrows():
        cells[("fixed", str(term))] = (fmt(r["estimate"], digits), marks(r["p_value"]) * stars)
        below = (
            f"({fmt(r['std_error'], digits)})"
            if statistic == "std_error"
            else f"[{fmt(r['lower'], digits)}, {fmt(r['upper'], digits)}]"
        )
        cells[("fixed", f"{term} ")] = (below, "")
    for v in res.varcorr().itertuples():
        effect = str(v.term).replace("(Intercept)", "Intercept")
        cells[("variance", f"SD ({effect} | {v.group})")] = (fmt(v.sd, digits), "")
    for t in f.terms:
        names = [z.replace("(Intercept)", "Intercept") for z in t.znames]
        corr = t.corr
        for i in range(len(names)):
            for j in range(i):
                label = f"Cor ({names[j]}, {names[i]} | {t.group})"
                cells[("variance", label)] = (fmt(float(corr[i, j]), digits), "")
    scale = f"as {RATIOS[f.link]} (exponentiated)" if exponentiate else f"on the {f.link} scale"
    notes = [f"{f.family} GLMM, fixed effects {scale}, Wald z tests"]
    if exponentiate and statistic == "std_error":
        notes[0] += ", SEs by the delta method"
    if f.family == "binomial" and all(t.znames == ("(Intercept)",) for t in f.terms):
        for s in res.shares().itertuples():
            if np.isfinite(s.icc):
                cells[("icc", f"ICC ({s.component})")] = (fmt(s.icc, digits), "")
        notes.append(f"ICCs on the latent scale ({f.link} residual variance)")
    rsq = res.r2()
    cells[("r2", "R2 marginal")] = (fmt(rsq.marginal, digits), "")
    cells[("r2", "R2 conditional")] = (fmt(rsq.conditional, digits), "")
    notes.append("R2 on the link scale (Nakagawa, Johnson & Schielzeth 2017)")
    cells[("fit", "N")] = (f"{f.nobs:,}", "")
    for name, n in f.ngroups.items():
        cells[("fit", f"Groups ({name})")] = (f"{n:,}", "")
    cells[("fit", "Deviance")] = (fmt(f.deviance, 1), "")
    cells[("fit", "Log-likelihood")] = (fmt(f.loglik, 1), "")
    cells[("fit", "AIC")] = (fmt(f.aic, 1), "")
    cells[("fit", "BIC")] = (fmt(f.bic, 1), "")
    cells[("fit", "Method")] = (glmm_method(f), "")
    return cells, notes
