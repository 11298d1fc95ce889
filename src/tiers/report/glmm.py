"""A fitted GLMM as text (lme4's ``glmer`` summary, Stata's ``melogit``/``mepoisson``).

The JSON document is `tiers.report.glmm_json`.

Renderers of numbers the fit holds; they compute nothing beyond formatting.
"""

from __future__ import annotations

import pandas as pd

from tiers.report.numfmt import stata_abbrev, stata_g
from tiers.results.glmm import GlmmFit

_STATA_TITLE = {
    ("binomial", "logit"): "Mixed-effects logistic regression",
    ("binomial", "probit"): "Mixed-effects probit regression",
    ("binomial", "cloglog"): "Mixed-effects complementary log-log regression",
    ("poisson", "log"): "Mixed-effects Poisson regression",
}


def _method(fit: GlmmFit) -> str:
    if fit.nagq == 1:
        return "Laplace Approximation"
    return f"Adaptive Gauss-Hermite Quadrature, nAGQ = {fit.nagq}"


def _stars(p: float) -> str:
    for cut, mark in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")):
        if p < cut:
            return mark
    return ""


def lme4_summary(fit: GlmmFit, table: pd.DataFrame) -> str:
    """lme4's ``summary(glmer(...))`` layout."""
    lines = [
        f"Generalized linear mixed model fit by maximum likelihood ({_method(fit)}) ['glmerMod']",
        f" Family: {fit.family}  ( {fit.link} )",
        f"Formula: {fit.formula}",
        "",
        f"{'AIC':>10} {'BIC':>10} {'logLik':>10} {'deviance':>10} {'df.resid':>9}",
        f"{fit.aic:>10.1f} {fit.bic:>10.1f} {fit.loglik:>10.1f} {fit.deviance:>10.1f} "
        f"{fit.nobs - fit.df:>9d}",
        "",
        "Random effects:",
    ]
    width = max([6] + [len(t.group) for t in fit.terms])
    lines.append(f" {'Groups':<{width}} {'Name':<12} {'Variance':>9} {'Std.Dev.':>9} Corr")
    for t in fit.terms:
        for i, z in enumerate(t.znames):
            corr = " ".join(f"{c:5.2f}" for c in t.corr[i, :i])
            grp = t.group if i == 0 else ""
            lines.append(
                f" {grp:<{width}} {z:<12} {t.covariance[i, i]:>9.4g} {t.sd[i]:>9.4g} {corr}".rstrip()
            )
    groups = ", ".join(f"{g}, {n}" for g, n in fit.ngroups.items())
    lines += [f"Number of obs: {fit.nobs}, groups:  {groups}", "", "Fixed effects:"]
    name_w = max(len(n) for n in fit.xnames)
    lines.append(
        f"{'':<{name_w}} {'Estimate':>9} {'Std. Error':>10} {'z value':>8} {'Pr(>|z|)':>9}"
    )
    for name, row in table.iterrows():
        p = float(row["p_value"])
        lines.append(
            f"{name!s:<{name_w}} {row['estimate']:>9.4f} {row['std_error']:>10.4f} "
            f"{row['z']:>8.3f} {p:>9.3g} {_stars(p)}".rstrip()
        )
    lines.append("---")
    lines.append("Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1")
    return "\n".join(lines + _tail(fit))


def _tail(fit: GlmmFit) -> list[str]:
    out = []
    if fit.warnings:
        out.append("")
        out += [f"Warning: {w}" for w in fit.warnings]
    if fit.notes:
        out += [f"Note: {n}" for n in fit.notes]
    return out


def stata_summary(fit: GlmmFit, table: pd.DataFrame, exponentiate: bool) -> str:
    """Stata's ``melogit``/``meprobit``/``mepoisson`` output."""
    title = _STATA_TITLE[(fit.family, fit.link)]
    method = "laplace" if fit.nagq == 1 else "mvaghermite"
    lines = [
        f"{title:<48}Number of obs     = {fit.nobs:>10,}",
    ]
    for g, n in fit.ngroups.items():
        lines.append(f"{'Group variable: ' + g:<48}Number of groups  = {n:>10,}")
    lines += [
        f"{'Integration method: ' + method:<48}Integration pts.  = {fit.nagq:>10}",
        "",
        f"Log likelihood = {fit.loglik:.4f}",
    ]
    rule = "-" * 78
    head = "Coefficient"
    if exponentiate:
        head = "Odds ratio" if fit.family == "binomial" else "IRR"
    lines += [
        rule,
        f"{'':>12} | {head:>11} {'Std. err.':>10} {'z':>8} {'P>|z|':>7}     [95% conf. interval]",
        "-" * 13 + "+" + "-" * 64,
    ]
    for name, row in table.iterrows():
        label = "_cons" if name == "(Intercept)" else stata_abbrev(str(name), 12)
        lines.append(
            f"{label:>12} | {stata_g(row['estimate'], 11)} {stata_g(row['std_error'], 10)} "
            f"{row['z']:>8.2f} {row['p_value']:>7.3f}    {stata_g(row['lower'], 10)} "
            f"{stata_g(row['upper'], 10)}"
        )
    lines.append("-" * 13 + "+" + "-" * 64)
    for t in fit.terms:
        lines.append(f"{stata_abbrev(t.group, 12):<12} |")
        for i, z in enumerate(t.znames):
            zname = "_cons" if z == "(Intercept)" else z
            lines.append(f"{'var(' + zname + ')':>12} | {stata_g(t.covariance[i, i], 11)}")
    lines.append(rule)
    if fit.family == "binomial":
        lines.append(
            "Note: variances are on the latent (link) scale; the latent residual variance is "
            + ("pi^2/3" if fit.link == "logit" else "1" if fit.link == "probit" else "pi^2/6")
        )
    return "\n".join(lines + _tail(fit))
