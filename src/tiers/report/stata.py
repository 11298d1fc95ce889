"""The Stata ``mixed`` layout: 78 columns, ``%9.0g`` cells, Stata's names and abbreviations.

The header (Stata 13 to 16's wording), the groups table, the fixed effects with Stata's
factor-variable names (`tiers.report.names`), the random-effects parameters as variances and
covariances (Stata 13+'s default) or, with ``stddeviations``, as SDs and correlations, slopes
before ``_cons``; the LR test against the linear model, the variance shares for intercept-only
models, and tiers' notes. Columns sit under their headers as Stata's do::

    ------------------------------------------------------------------------------
        Reaction |      Coef.   Std. Err.      z    P>|z|     [95% Conf. Interval]
    -------------+----------------------------------------------------------------
            Days |   10.46729   1.545789     6.77   0.000     7.437595    13.49698

Every number arrives computed (`tiers.api.LmmResult.summary`); this module only lays it out.
"""

from __future__ import annotations

import math
import textwrap

import pandas as pd

from tiers.design.covariance import CovStructure
from tiers.design.diagnostics import FEW_GROUPS
from tiers.report.names import StataName, stata_effect, stata_name
from tiers.report.numfmt import stata_abbrev, stata_g, stata_label
from tiers.report.residual import stata_rows
from tiers.results.result import FitResult
from tiers.variance.information import CorrInference, SdInference
from tiers.variance.residual import ResidualInference
from tiers.variance.scale import corr_pairs, n_sd

WIDTH = 78
RULE = "-" * WIDTH
FE_RULE = "-" * 13 + "+" + "-" * 64
RE_RULE = "-" * 29 + "+" + "-" * 48
SEP_ROW = " " * 13 + "|"
#: A model F test: F, numerator df, denominator df, p.
FTest = tuple[float, int, float, float]

_KIND = {
    "unstructured": "Unstructured",
    "independent": "Independent",
    "identity": "Identity",
    "exchangeable": "Exchangeable",
}


def _f(x: float, width: int, decimals: int) -> str:
    """Stata's ``%{width}.{decimals}f``; missing as ``.``."""
    return f"{x:>{width}.{decimals}f}" if math.isfinite(x) else ".".rjust(width)


def _pct(level: float) -> str:
    return f"{level * 100:.10g}"


def _wrap(line: str, width: int = WIDTH) -> list[str]:
    """A note wrapped at ``width``, continuation lines indented as Stata's notes are."""
    return textwrap.wrap(line, width, subsequent_indent="      ", break_on_hyphens=False) or [""]


def estimator_line(res: FitResult) -> str:
    """Which estimator, and that REML is tiers' default for both syntaxes (Stata's is ML)."""
    if res.engine == "pseudo":
        return "Pseudo-ML: sampling weights (a pseudo-likelihood is ML-based; no REML version)"
    if res.robust is not None and res.robust.kind == "robust" and not res.reml:
        return "ML: the sandwich (vce robust) is built on the likelihood, so ML unless asked"
    if res.reml:
        return "REML: tiers' default for both syntaxes (Stata's mixed defaults to ML: , mle)"
    return "ML, as asked: tiers' default for both syntaxes is REML (Stata's mixed: ML)"


def header(
    res: FitResult, level: float, tests: pd.DataFrame | None = None, ftest: FTest | None = None
) -> list[str]:
    """Title, number of observations and groups, Wald test and log likelihood.

    With ``tests`` (a coefficient table with a ``df`` column, Stata's ``dfmethod()``), the df
    method and the df's min, average and max; with ``ftest`` (F, numerator df, denominator df,
    p) Stata's model F test replaces the Wald chi2.
    """
    method = "REML" if res.reml else "ML"
    out = [f"Mixed-effects {method} regression".ljust(48) + f"Number of obs     = {res.nobs:>10,}"]
    if len(res.levels) == 1:
        lv = res.levels[0]
        out += [
            f"Group variable: {stata_abbrev(lv.name, 31)}".ljust(48)
            + f"Number of groups  = {lv.ngroups:>10,}",
            "",
            " " * 48 + "Obs per group:",
            " " * 62 + f"min = {lv.min_obs:>10,}",
            " " * 62 + f"avg = {lv.mean_obs:>10,.1f}",
            " " * 62 + f"max = {lv.max_obs:>10,}",
        ]
    else:
        out += [
            "",
            "-" * 61,
            " " * 16 + "|     No. of       Observations per Group",
            " Group Variable |     Groups    Minimum    Average    Maximum",
            "-" * 16 + "+" + "-" * 44,
        ]
        for lv in res.levels:
            out.append(
                f"{stata_abbrev(lv.name, 15):>15} |{lv.ngroups:>11,}{lv.min_obs:>11,}"
                f"{lv.mean_obs:>11,.1f}{lv.max_obs:>11,}"
            )
        out.append("-" * 61)
    if tests is not None:
        method = str(tests.attrs.get("method", ""))
        dfs = tests["df"].to_numpy()
        out += [
            f"DF method: {method}".ljust(48) + f"{'DF:':<14}min = {_f(float(dfs.min()), 10, 2)}",
            " " * 62 + f"avg = {_f(float(dfs.mean()), 10, 2)}",
            " " * 62 + f"max = {_f(float(dfs.max()), 10, 2)}",
        ]
    ll_name = "Log restricted-likelihood" if res.reml else "Log likelihood"
    if res.engine == "pseudo":
        ll_name = "Log pseudolikelihood"
    ll = f"{ll_name} = {stata_g(res.loglik, 10)}".ljust(48)
    if ftest is not None:
        F, ndf, ddf, pf = ftest
        out += ["", " " * 48 + f"{f'F({ndf}, {ddf:.2f})':<18}= {_f(F, 10, 2)}"]
        out += [ll + f"{'Prob > F':<18}= {_f(pf, 10, 4)}", estimator_line(res)]
        return out
    wald = res.wald
    chi2, df, p = wald if wald is not None else (math.nan, 0, math.nan)
    out += [
        "",
        " " * 48 + f"{f'Wald chi2({df})':<18}= {_f(chi2, 10, 2)}",
        ll + f"{'Prob > chi2':<18}= {_f(p, 10, 4)}",
        estimator_line(res),
    ]
    if res.robust is not None:
        rob = res.robust
        out.append(
            f"(Std. err. adjusted for {rob.n_clusters:,} clusters in {rob.cluster})".rjust(WIDTH)
        )
    return out


def _label_lines(label: str, *, header_row: bool) -> list[str]:
    """A row label in 12 columns: abbreviated, or an interaction split at ``#`` over lines.

    Every line but the last ends in ``#|`` (Stata's ``c.weight#|`` over ``c.weight |``); a
    header row's last line has no numbers after its ``|``.
    """
    if len(label) <= 12:
        chunks = [label]
    elif "#" in label:
        parts = [stata_abbrev(p, 12) for p in label.split("#")]
        chunks, cur = [], parts[0]
        for p in parts[1:]:
            if len(cur) + 1 + len(p) <= 12:
                cur += "#" + p
            else:
                chunks.append(cur)
                cur = p
        chunks.append(cur)
    else:
        chunks = [stata_abbrev(label, 12)]
    lines = [f"{c + '#':>13}|" for c in chunks[:-1]]
    lines.append(f"{chunks[-1]:>12} |")
    if header_row:
        lines[-1] = lines[-1].rstrip()
    return lines


def _numbers(est: float, se: float, z: float, p: float, lo: float, hi: float) -> str:
    return (
        f"  {stata_g(est)}  {stata_g(se)} {_f(z, 8, 2)}   {_f(p, 5, 3)}"
        f"    {stata_g(lo)}   {stata_g(hi)}"
    )


def coef_table(res: FitResult, table: pd.DataFrame, level: float) -> list[str]:
    """Stata's coefficient table: factor levels under their header, separators as Stata.

    z tests, or t tests where ``table`` has a ``t`` column (Stata's ``dfmethod()``).
    """
    yname = stata_abbrev(res.formula.response, 12)
    stat = "t" if "t" in table.columns else "z"
    out = [RULE]
    if res.robust is not None:  # Stata's label above the SE column
        out.append(f"{'':>12} |{'Robust' if res.robust.kind == 'robust' else 'CR2':>20}")
    out += [
        f"{yname:>12} |      Coef.   Std. Err.      {stat}    P>|{stat}|"
        + f"[{_pct(level)}% Conf. Interval]".rjust(25),
        FE_RULE,
    ]
    names = [str(n) for n in table.index]
    order = [i for i, n in enumerate(names) if n != "(Intercept)"]
    order += [i for i, n in enumerate(names) if n == "(Intercept)"]
    # consecutive coefficients of one factor term share a header row
    blocks: list[tuple[str, list[tuple[StataName, int]]]] = []
    labels = res.design.frame.data.attrs.get("value_labels") or {}
    for i in order:
        sn = stata_name(names[i], labels)
        key = sn.term if sn.level is not None else f"\0{sn.term}"
        if blocks and blocks[-1][0] == key:
            blocks[-1][1].append((sn, i))
        else:
            blocks.append((key, [(sn, i)]))
    prev_after = False
    for b, (_key, rows) in enumerate(blocks):
        first = rows[0][0]
        factor = first.level is not None
        interaction = "#" in first.term
        if b > 0 and (prev_after or factor or interaction):
            out.append(SEP_ROW)
        if factor:
            out += _label_lines(first.term, header_row=True)
        for sn, i in rows:
            r = table.iloc[i]
            nums = _numbers(r.estimate, r.std_error, r[stat], r.p_value, r.ci_lower, r.ci_upper)
            if factor:
                out.append(f"{stata_label(str(sn.level), 11):>11}  |" + nums)
            else:
                lines = _label_lines(sn.term, header_row=False)
                out += lines[:-1] + [lines[-1] + nums]
        prev_after = interaction or len(rows) > 1
    out.append(RULE)
    return out


def _re_label(kind: str, names: list[str], sep: str = ",") -> str:
    """``var(cses)``, ``cov(cses,_cons)``: names abbreviated so the label fits 28 columns."""
    for n in (12, 11, 8, 5):
        label = f"{kind}({sep.join(stata_abbrev(x, n) for x in names)})"
        if len(label) <= 28:
            return label
    return stata_abbrev(label, 28)


def _re_row(label: str, est: float, se: float, lo: float, hi: float) -> str:
    return f"{label:>28} |  {stata_g(est)}  {stata_g(se)}     {stata_g(lo)}   {stata_g(hi)}"


def re_table(
    res: FitResult,
    sdi: SdInference,
    ci: CorrInference,
    level: float,
    *,
    stddeviations: bool,
    residual: ResidualInference | None = None,
) -> list[str]:
    """Random-effects parameters: per term its structure, variances (or SDs), covariances.

    Stata's order within a term: the slopes, then ``_cons``; then each pair's covariance
    (correlation), in the same order.
    """
    if stddeviations:
        var = (sdi.sd, sdi.se, sdi.lower, sdi.upper)
        cov = (ci.estimate, ci.se, ci.lower, ci.upper)
        vname, cname = "sd", "corr"
    else:
        var = sdi.variance_scale()
        cov = (ci.cov, ci.cov_se, ci.cov_lower, ci.cov_upper)
        vname, cname = "var", "cov"
    out = [
        RULE,
        "  Random-effects Parameters  |   Estimate   Std. Err."
        + f"[{_pct(level)}% Conf. Interval]".rjust(25),
        RE_RULE,
    ]
    ngroups = {lv.name: lv.ngroups for lv in res.levels}
    k = c = 0
    for term in res.terms:
        cs = CovStructure(term.covariance, term.q)
        nsd, pairs = n_sd(cs), corr_pairs(cs)
        kind = "Identity" if term.q == 1 else _KIND[term.covariance]
        group = stata_abbrev(term.group, 28 - len(": " + kind))
        out.append(f"{group + ': ' + kind:<29}|")
        # Stata's order: slopes first, then _cons
        effects = [j for j in range(term.q) if term.znames[j] != "(Intercept)"]
        effects += [j for j in range(term.q) if term.znames[j] == "(Intercept)"]
        znames = [stata_effect(z) for z in term.znames]
        if nsd == term.q:
            for j in effects:
                out.append(_re_row(_re_label(vname, [znames[j]]), *(a[k + j] for a in var)))
        else:  # one SD shared by all the term's effects
            label = _re_label(vname, [znames[j] for j in effects], " ")
            out.append(_re_row(label, *(a[k] for a in var)))
        at = {frozenset(p): c + n for n, p in enumerate(pairs)}
        if nsd == term.q:  # unstructured: every pair; independent: none
            for x, i in enumerate(effects):
                for j in effects[x + 1 :]:
                    row = at.get(frozenset((i, j)))
                    if row is None:
                        continue
                    label = _re_label(cname, [znames[i], znames[j]])
                    out.append(_re_row(label, *(a[row] for a in cov)))
        elif pairs:  # exchangeable: one common correlation
            label = _re_label(cname, [znames[j] for j in effects], " ")
            out.append(_re_row(label, *(a[c] for a in cov)))
        n = ngroups.get(term.group)
        if n is not None and n < FEW_GROUPS:
            out.append(f"{'':>28} |   ^ only {n} groups: poorly determined")
        out.append(RE_RULE)
        k += nsd
        c += len(pairs)
    if residual is None:
        out.append(_re_row(f"{vname}(Residual)", *(a[-1] for a in var)))
    else:
        out += stata_rows(residual)
        out.append(_re_row(f"{vname}(e)", *(a[-1] for a in var)))
    out.append(RULE)
    return out


def lr_lines(res: FitResult) -> list[str]:
    """Stata's LR test against the linear model, its p-value right-aligned at column 78."""
    lrt = res.lr_linear
    if lrt.test.startswith("chibar2"):
        left = f"LR test vs. linear model: {lrt.test} = {lrt.chi2:.2f}"
        right = f"Prob >= chibar2 = {lrt.p_value:.4f}"
    elif lrt.test.startswith("chi2"):
        left = f"LR test vs. linear model: chi2({lrt.df}) = {lrt.chi2:.2f}"
        right = f"Prob > chi2 = {lrt.p_value:.4f}"
    else:
        left = f"LR test vs. linear model: {lrt.chi2:.2f}"
        right = f"{lrt.test}: p = {lrt.p_value:.4f}"
    out = [left + right.rjust(WIDTH - len(left))]
    if lrt.test.startswith("chi2"):
        out += ["", "Note: LR test is conservative and provided only for reference."]
    return out


def shares_table(shares: pd.DataFrame, level: float = 0.95) -> list[str]:
    """Each level's share of the unexplained variance, and the cumulative ICC (``estat icc``).

    From `tiers.inference.shares.variance_shares`'s table, 78 columns wide.
    """
    ci = f"[{_pct(level)}% Conf. Int.]"
    out = [
        "Variance decomposition. Share: this level's part of the unexplained variance.",
        "ICC: correlation of two observations in the same unit (cumulative, estat icc).",
        RULE,
        f"{'Level':>12} |   Variance    Share{ci:>18}     ICC{ci:>18}",
        FE_RULE,
    ]
    for r in shares.itertuples():
        icc = "" if math.isnan(r.icc) else f"{_f(r.icc, 8, 4)}{_ci(r.icc_lower, r.icc_upper)}"
        out.append(
            f"{stata_abbrev(str(r.level), 12):>12} |  {stata_g(r.variance)}{_f(r.share, 9, 4)}"
            f"{_ci(r.share_lower, r.share_upper)}{icc}".rstrip()
        )
    out.append(RULE)
    return out


def _ci(lo: float, hi: float) -> str:
    return f"   {_f(lo, 7, 4)} {_f(hi, 7, 4)}"


def footer(res: FitResult, width: int = WIDTH) -> list[str]:
    """The fit's notes and warnings, and how the fit went, wrapped at ``width`` columns."""
    lines = [f"Note: {n}" for n in res.notes]
    lines += [f"Warning: {w}" for w in res.warnings]
    status = "converged" if res.converged else "NOT converged"
    grad = max((abs(v) for v in res.opt.gradient), default=0.0)
    lines.append(
        f"Fit: {res.engine} engine, {status} ({res.opt.n_evaluations} evaluations, "
        f"|gradient| {grad:.1e}), {res.fit_seconds * 1000:.0f} ms"
    )
    out: list[str] = []
    for ln in lines:
        out += textwrap.wrap(ln, width, subsequent_indent="      ", break_on_hyphens=False)
    return out


def stata(
    res: FitResult,
    table: pd.DataFrame,
    sdi: SdInference,
    ci: CorrInference,
    shares: pd.DataFrame | None = None,
    *,
    level: float = 0.95,
    stddeviations: bool = False,
    residual: ResidualInference | None = None,
    ftest: FTest | None = None,
) -> str:
    """The Stata ``mixed`` layout of a fit.

    Parameters
    ----------
    res : FitResult
    table : DataFrame
        `FitResult.coef_table` at ``level``: z tests, or t tests with a ``df`` column
        (``attrs["method"]`` names the df method).
    sdi, ci : SdInference, CorrInference
        The variance parameters with intervals at ``level`` (`tiers.variance.information`).
    shares : DataFrame, optional
        `tiers.inference.shares.variance_shares` at ``level`` (intercept-only models).
    level : float
        The confidence level the intervals were computed at (for the headers).
    stddeviations : bool
        SDs and correlations (``sd()``, ``corr()``) instead of variances and covariances.
    residual : ResidualInference, optional
        The residual structure's parameters (`tiers.variance.residual`).
    ftest : (F, num_df, den_df, p), optional
        With t tests, the F test that all coefficients but the intercept are zero.
    """
    tests = table if "df" in table.columns else None
    out = header(res, level, tests, ftest) + [""]
    out += coef_table(res, table, level) + [""]
    out += re_table(res, sdi, ci, level, stddeviations=stddeviations, residual=residual)
    if res.robust is None:  # Stata omits the LR test with robust standard errors
        out += lr_lines(res)
    if any(math.isnan(v) for v in sdi.se[:-1]):
        what = "An SD" if stddeviations else "A variance"
        out += _wrap(f"Note: {what} estimated at zero has no standard error or interval.")
    if shares is not None:
        out += [""] + shares_table(shares, level)
    out += footer(res)
    return "\n".join(out)
