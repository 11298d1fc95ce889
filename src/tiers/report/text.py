"""Plain-text summaries in Stata's ``mixed`` layout and in lme4's ``summary(lmer)`` layout."""

from __future__ import annotations

import math

import pandas as pd

from tiers.design.diagnostics import FEW_GROUPS
from tiers.results.result import FitResult

RULE = "-" * 78


def g(x: float, width: int = 10, digits: int = 7) -> str:
    """Stata-like general format: ``digits`` significant digits, no leading zero, right-aligned."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ".".rjust(width)
    s = f"{x:.{digits}g}"
    if "e" not in s:
        if s.startswith("0."):
            s = s[1:]
        elif s.startswith("-0."):
            s = "-" + s[2:]
    return s.rjust(width)


def _fixed_name(name: str) -> str:
    return "_cons" if name == "(Intercept)" else name


def _footer(res: FitResult) -> list[str]:
    lines = []
    for note in res.notes:
        lines.append(f"Note: {note}")
    for warn in res.warnings:
        lines.append(f"Warning: {warn}")
    status = "converged" if res.converged else "NOT converged"
    lines.append(
        f"Fit: {res.engine} engine, {status} ({res.opt.n_evaluations} evaluations, "
        f"max |gradient| {max((abs(v) for v in res.opt.gradient), default=0.0):.1e}), "
        f"{res.fit_seconds * 1000:.0f} ms"
    )
    return lines


def stata(res: FitResult, shares: pd.DataFrame | None = None) -> str:
    """The Stata ``mixed`` layout: groups table, fixed effects, random-effects parameters, LR test."""
    method = "REML" if res.reml else "ML"
    ll_name = "Log restricted-likelihood" if res.reml else "Log likelihood"
    out = [f"Mixed-effects {method} regression".ljust(48) + f"Number of obs     = {res.nobs:>10,}"]
    if len(res.levels) == 1:
        lv = res.levels[0]
        out += [
            f"Group variable: {lv.name}".ljust(48) + f"Number of groups  = {lv.ngroups:>10,}",
            "",
            " " * 48 + "Obs per group:",
            " " * 62 + f"min = {lv.min_obs:>10,}",
            " " * 62 + f"avg = {lv.mean_obs:>10,.1f}",
            " " * 62 + f"max = {lv.max_obs:>10,}",
        ]
    else:
        width = max(14, *(len(lv.name) for lv in res.levels))
        head = "-" * (width + 2) + "+" + "-" * 44
        out += [
            "",
            head,
            " " * (width + 2) + "|     No. of       Observations per Group",
            " Group Variable".ljust(width + 2) + "|     Groups    Minimum    Average    Maximum",
            head,
        ]
        for lv in res.levels:
            out.append(
                f" {lv.name:>{width}} | {lv.ngroups:>10,} {lv.min_obs:>10,} "
                f"{lv.mean_obs:>10,.1f} {lv.max_obs:>10,}"
            )
        out.append(head)
    out.append("")
    wald = res.wald
    if wald is not None:
        out.append(" " * 48 + f"Wald chi2({wald[1]})".ljust(18) + f"= {wald[0]:>10.2f}")
    ll = f"{ll_name} = {res.loglik:.7g}".ljust(48)
    out.append(ll + ("Prob > chi2       = " + f"{wald[2]:>10.4f}" if wald is not None else ""))
    out.append("")
    table = res.coef_table()
    yname = res.formula.response[:12]
    out += [
        RULE,
        f"{yname:>12} |      Coef.   Std. Err.      z    P>|z|     [95% Conf. Interval]",
        "-" * 13 + "+" + "-" * 64,
    ]
    rows = list(table.itertuples())
    rows = [r for r in rows if r.Index != "(Intercept)"] + [
        r for r in rows if r.Index == "(Intercept)"
    ]
    for r in rows:
        out.append(
            f"{_fixed_name(str(r.Index))[:12]:>12} | {g(r.estimate)}  {g(r.std_error)} "
            f"{r.z:>8.2f}   {r.p_value:>6.3f}    {g(r.ci_lower)}  {g(r.ci_upper)}"
        )
    out += [RULE, ""]
    sdi = res.sd_inference
    out += [
        RULE,
        "  Random-effects Parameters  |   Estimate   Std. Err.     [95% Conf. Interval]",
        "-" * 29 + "+" + "-" * 48,
    ]
    out += _re_rows(res)
    out.append(
        f"{'sd(Residual)':>28} | {g(sdi.sd[-1])}  {g(sdi.se[-1])}    {g(sdi.lower[-1])}  "
        f"{g(sdi.upper[-1])}"
    )
    out.append(RULE)
    lrt = res.lr_linear
    if lrt.test.startswith("chibar2"):
        out.append(
            f"LR test vs. linear model: chibar2(01) = {lrt.chi2:.2f}".ljust(52)
            + f"Prob >= chibar2 = {lrt.p_value:.4f}"
        )
    else:
        out.append(
            f"LR test vs. linear model: chi2({lrt.df}) = {lrt.chi2:.2f}".ljust(52)
            + f"Prob > chi2 = {lrt.p_value:.4f}"
        )
        out.append("Note: LR test is conservative and provided only for reference.")
    if any(math.isnan(v) for v in res.sd_inference.se[:-1]):
        out.append("Note: an SD estimated at zero has no log-scale standard error or interval.")
    if res.intercepts_only:
        out += [""] + shares_table(shares)
    out += _footer(res)
    return "\n".join(out)


_KIND = {
    "unstructured": "Unstructured",
    "independent": "Independent",
    "identity": "Identity",
    "exchangeable": "Exchangeable",
}


def _z(name: str) -> str:
    return "_cons" if name == "(Intercept)" else name


def _re_rows(res: FitResult) -> list[str]:
    """Stata's random-effects block: per term its structure, sd() rows, then corr() rows."""
    sdi, ci = res.sd_inference, res.corr_inference
    ngroups = {lv.name: lv.ngroups for lv in res.levels}
    out, k = [], 0
    for term in res.terms:
        kind = "Identity" if term.q == 1 else _KIND[term.covariance]
        out.append(f"{term.group + ': ' + kind:<29}|")
        n_sd = 1 if term.covariance in ("identity", "exchangeable") else term.q
        for j in range(n_sd):
            label = f"sd({_z(term.znames[j])})" if n_sd == term.q else "sd(all)"
            out.append(
                f"{label[:28]:>28} | {g(sdi.sd[k])}  {g(sdi.se[k])}    {g(sdi.lower[k])}  "
                f"{g(sdi.upper[k])}"
            )
            k += 1
        if ci is not None:
            for i, (grp, a, b) in enumerate(ci.names):
                if grp == term.group and a in term.znames and b in term.znames:
                    label = f"corr({_z(b)},{_z(a)})"
                    out.append(
                        f"{label[:28]:>28} | {g(ci.estimate[i])}  {g(ci.se[i])}    "
                        f"{g(ci.lower[i])}  {g(ci.upper[i])}"
                    )
        n = ngroups.get(term.group)
        if n is not None and n < FEW_GROUPS:
            out.append(f"{'':>28} |   ^ only {n} groups: this SD is poorly determined")
        out.append("-" * 29 + "+" + "-" * 48)
    return out


def shares_table(shares: pd.DataFrame) -> list[str]:
    """Each level's share of the unexplained variance, and the cumulative ICC (Stata's estat icc).

    From `tiers.inference.shares.variance_shares`'s table.
    """
    width = max(12, *(len(str(v)) for v in shares["level"]))
    rule = "-" * (width + 1) + "+" + "-" * 66
    out = [
        "Variance decomposition. Share: this level's part of the unexplained variance.",
        "ICC: correlation of two observations in the same unit (cumulative, estat icc).",
        rule,
        f"{'Level':>{width}} |   Variance    Share  [95% Conf. Int.]      ICC  [95% Conf. Int.]",
        rule,
    ]
    for r in shares.itertuples():
        icc = "" if math.isnan(r.icc) else f"{r.icc:>9.4f}  {_ci(r.icc_lower, r.icc_upper)}"
        out.append(
            f"{str(r.level):>{width}} | {g(r.variance, 10)} {r.share:>8.4f}  "
            f"{_ci(r.share_lower, r.share_upper)}{icc}".rstrip()
        )
    out.append(rule)
    return out


def _ci(lo: float, hi: float) -> str:
    if math.isnan(lo) or math.isnan(hi):
        return f"{'.':>7} {'.':>7}  "
    return f"{lo:>7.4f} {hi:>7.4f}  "


def _table(rows: list[list[str]], align: list[str]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [
            c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align, strict=True)
        ]
        lines.append(" " + " ".join(cells).rstrip())
    return lines


def lme4(res: FitResult) -> str:
    """lme4's ``summary(lmer(...))`` layout (levels innermost first, as lme4 orders them)."""
    crit = "REML" if res.reml else "maximum likelihood"
    out = [
        f"Linear mixed model fit by {crit}",
        f"Formula: {res.formula.text}",
        "",
    ]
    if res.reml:
        out.append(f"REML criterion at convergence: {res.criterion:.1f}")
    else:
        rows = [
            ["AIC", "BIC", "logLik", "deviance", "df.resid"],
            [
                f"{res.aic:.1f}",
                f"{res.bic:.1f}",
                f"{res.loglik:.1f}",
                f"{res.criterion:.1f}",
                str(res.nobs - res.n_params),
            ],
        ]
        out += _table(rows, ["r"] * 5)
    out += ["", "Random effects:"]
    vc = res.varcorr
    corr = res.correlations
    # lme4 lists terms by decreasing number of groups, the residual last
    sizes = {lv.name: lv.ngroups for lv in res.levels}
    order = sorted(range(len(vc) - 1), key=lambda i: -sizes.get(vc.iloc[i].group, 0))
    order.append(len(vc) - 1)
    rows = [["Groups", "Name", "Variance", "Std.Dev.", "Corr"]]
    last_group = None
    for i in order:
        row = vc.iloc[i]
        cors = corr[(corr.group == row.group) & (corr.term1 == row.term)] if len(corr) else corr
        rows.append(
            [
                "" if row.group == last_group else str(row.group),
                "" if pd.isna(row.term) else str(row.term),
                f"{row.variance:.4g}",
                f"{row.sd:.4g}",
                " ".join(f"{c:.2f}" for c in cors["correlation"]) if len(cors) else "",
            ]
        )
        last_group = row.group
    out += _table(rows, ["l", "l", "r", "r", "l"])
    groups = "; ".join(f"{lv.name}, {lv.ngroups}" for lv in reversed(res.levels))
    out += [f"Number of obs: {res.nobs}, groups:  {groups}", "", "Fixed effects:"]
    table = res.coef_table()
    rows = [["", "Estimate", "Std. Error", "t value"]]
    for name, r in table.iterrows():
        rows.append([str(name), f"{r.estimate:.4f}", f"{r.std_error:.4f}", f"{r.z:.2f}"])
    out += _table(rows, ["l", "r", "r", "r"])
    if res.is_singular:
        out += ["", "boundary (singular) fit: see help('isSingular')"]
    out += [""] + _footer(res)
    return "\n".join(out)


_METHOD_TITLE = {
    "wald": "Wald",
    "profile": "profile likelihood",
    "profile-ml": "profile likelihood (ML refit, as lme4)",
    "bootstrap": "parametric bootstrap, percentile",
}


def confint_table(ci: pd.DataFrame, tests: pd.DataFrame | None = None) -> str:
    """Intervals from `FitResult.confint`.

    With ``tests`` (`FitResult.satterthwaite`), the fixed effects' Satterthwaite df and p-values
    next to them.
    """
    a = ci.attrs
    title = (
        f"{a.get('level', 0.95):.0%} intervals: {_METHOD_TITLE.get(a.get('method'), a.get('method'))}"
        f" ({a.get('criterion')} criterion)"
    )
    rows = [["", "Estimate", "Lower", "Upper", "df", "P>|t|"]]
    for r in ci.itertuples():
        df = p = ""
        if tests is not None and r.name in tests.index:
            df = f"{tests.loc[r.name, 'df']:.2f}"
            p = f"{tests.loc[r.name, 'p_value']:.4g}"
        rows.append([str(r.name), f"{r.estimate:.6g}", _num(r.lower), _num(r.upper), df, p])
    keep = 6 if tests is not None else 4
    out = [title, RULE] + _table([row[:keep] for row in rows], ["l"] + ["r"] * (keep - 1))
    out.append(RULE)
    if tests is not None:
        out.append("df, P>|t|: t tests with Satterthwaite's degrees of freedom (lmerTest's method)")
    out += [f"Note: {n}" for n in a.get("notes", [])]
    return "\n".join(out)


def _num(x: float) -> str:
    if x is None or math.isnan(x):
        return "."
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.6g}"
