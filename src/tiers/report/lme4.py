"""lme4's ``summary(lmer(...))`` layout, as R prints it with lmerTest loaded.

The title (``Linear mixed model fit by REML. t-tests use Satterthwaite's method
[lmerModLmerTest]``, wrapped as R wraps it at 80 columns), the formula, the REML criterion or
the AIC table, the scaled residuals' quantiles, the random effects (``Groups Name Variance
Std.Dev. Corr``, terms by decreasing number of groups, an uncorrelated ``||`` term split into
``Subject`` and ``Subject.1`` as lme4 splits it), the fixed effects with Satterthwaite's ``df``
and ``Pr(>|t|)`` and R's significance stars, and the correlation of the fixed effects. Each
column is formatted as R's ``printCoefmat``, ``formatVC`` and ``print`` format it
(`tiers.report.numfmt`). ``Data:`` names the file when `tiers.read_data` read the data (a data
frame made in Python has no name tiers could know, and the line is left out).

Without Satterthwaite's table (its Hessian singular) the layout is plain lme4's:
``['lmerMod']``, ``Estimate Std. Error t value``.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tiers.design.covariance import CovStructure
from tiers.formula.render import render
from tiers.report.numfmt import (
    r_abbreviate,
    r_cat_fill,
    r_format,
    r_format_pval,
    r_matrix,
    r_named,
    r_round,
    r_zapsmall,
)
from tiers.report.residual import nlme_lines
from tiers.report.stata import footer
from tiers.results.result import FitResult
from tiers.variance.scale import corr_pairs, n_sd

#: R's ``max(3, getOption("digits") - 3)``, the digits lme4's print method uses.
DIGITS = 4
WIDTH = 80
#: lme4's ``getOption("lme4.summary.cor.max")``: larger fixed parts skip the correlations.
COR_MAX = 12
SIGNIF_LEGEND = "Signif. codes:  0 ‘***’ 0.001 ‘**’ 0.01 ‘*’ 0.05 ‘.’ 0.1 ‘ ’ 1"


def _title(res: FitResult, lmertest: str | None) -> list[str]:
    """lme4's ``.prt.methTit``: one line, or wrapped at 80 columns as R wraps it.

    ``lmertest``: the df method of lmerTest's t tests (``Satterthwaite``, ``Kenward-Roger``).
    """
    mtit = "Linear mixed model fit by " + ("REML" if res.reml else "maximum likelihood ")
    if res.engine == "pseudo":  # not lme4's: it has no sampling weights
        mtit = "Linear mixed model fit by pseudo-maximum likelihood (sampling weights)"
    cls = "lmerMod"
    if lmertest:
        mtit, cls = f"{mtit}. t-tests use {lmertest}'s method", "lmerModLmerTest"
    if len(mtit) + 5 + len(cls) <= WIDTH:
        return [f"{mtit} ['{cls}']"]
    lines = textwrap.wrap(mtit, WIDTH - 3, subsequent_indent="  ", break_on_hyphens=False)
    return r_cat_fill([*lines, " [", cls, "]"], WIDTH, sep="")


def _formula(res: FitResult) -> list[str]:
    """``Formula:`` and the model in lme4's syntax (a Stata formula is rendered in it)."""
    f = res.formula
    text = f.text if f.syntax == "lme4" else render(dataclasses.replace(f, syntax="lme4"))
    lines = textwrap.wrap(
        f"Formula: {text}", WIDTH, subsequent_indent="    ", break_on_hyphens=False
    )
    source = res.design.frame.source
    return [*lines, f"   Data: {source}"] if source else lines


def _criterion(res: FitResult) -> list[str]:
    """``REML criterion at convergence:`` or the AIC table (``.prt.aictab``)."""
    if res.reml:
        value = r_format([r_round(res.criterion, 1)], 7)[0].strip()
        return [f"REML criterion at convergence: {value}"]
    vals = [r_round(v, 1) for v in (res.aic, res.bic, res.loglik, res.criterion)]
    df_resid = float(res.nobs - res.n_params)
    cells = r_format([*vals, df_resid], 7)
    cells[-1] = r_format([df_resid], 7)[0]
    return r_named(cells, ["AIC", "BIC", "logLik", "deviance", "df.resid"])


def _residuals(quantiles: Sequence[float]) -> list[str]:
    """``Scaled residuals:`` Min 1Q Median 3Q Max, zapped and formatted as lme4 does.

    None of them when the rows are not held (a fit from a Dask DataFrame's statistics).
    """
    if not quantiles:
        return ["Scaled residuals: not computed (the rows stay in the Dask DataFrame)"]
    q = r_zapsmall(list(quantiles), DIGITS + 1)
    return [
        "Scaled residuals:",
        *r_named(r_format(q, DIGITS), ["Min", "1Q", "Median", "3Q", "Max"]),
    ]


@dataclass
class _Block:
    """One row group of lme4's random-effects table: a term, or one effect of a ``||`` term."""

    group: str
    factor: str
    ngroups: int
    names: list[str]
    sds: list[float]
    corr: NDArray[np.float64] | None


def _blocks(res: FitResult) -> list[_Block]:
    """The random-effects terms as lme4 lists them: by decreasing number of groups."""
    sdi, ci = res.sd_inference, res.corr_inference
    ngroups = {lv.name: lv.ngroups for lv in res.levels}
    blocks: list[_Block] = []
    k = c = 0
    for term in res.terms:
        cs = CovStructure(term.covariance, term.q)
        nsd, pairs = n_sd(cs), corr_pairs(cs)
        n = ngroups.get(term.group, 0)
        sds = [float(sdi.sd[k + min(j, nsd - 1)]) for j in range(term.q)]
        if pairs:  # unstructured, exchangeable: one block with its correlation matrix
            R = np.eye(term.q)
            for x, (i, j) in enumerate(pairs):
                R[i, j] = R[j, i] = ci.estimate[c + x]
            if term.covariance == "exchangeable":
                R = np.full((term.q, term.q), ci.estimate[c])
                np.fill_diagonal(R, 1.0)
            blocks.append(_Block(term.group, term.group, n, list(term.znames), sds, R))
        else:  # q == 1, or uncorrelated effects: lme4 makes each one a term of its own
            for j in range(term.q):
                blocks.append(_Block(term.group, term.group, n, [term.znames[j]], [sds[j]], None))
        k += nsd
        c += len(pairs)
    blocks.sort(key=lambda b: -b.ngroups)
    seen: dict[str, int] = {}
    for b in blocks:  # R's make.unique: Subject, Subject.1, ...
        count = seen.get(b.group, 0)
        seen[b.group] = count + 1
        if count:
            b.group = f"{b.group}.{count}"
    return blocks


def _random_effects(res: FitResult) -> list[str]:
    """lme4's ``formatVC`` table and the ``Number of obs`` line."""
    blocks = _blocks(res)
    groups = [b.group if i == 0 else "" for b in blocks for i in range(len(b.names))]
    names = [n for b in blocks for n in b.names]
    sds = [s for b in blocks for s in b.sds] + [res.sigma]
    rows = [
        [g, n, v, s]
        for g, n, v, s in zip(
            [*groups, "Residual"],
            [*names, ""],
            r_format([s**2 for s in sds], DIGITS),
            r_format(sds, DIGITS),
            strict=True,
        )
    ]
    colnames = ["Groups", "Name", "Variance", "Std.Dev."]
    maxlen = max(len(b.names) for b in blocks) if blocks else 1
    if maxlen > 1:
        corr_cells: list[list[str]] = []
        for b in blocks:
            q = len(b.names)
            cells = [[""] * (maxlen - 1) for _ in range(q)]
            if b.corr is not None:
                flat = r_format([r_round(v, 2) for v in b.corr.ravel()], 7, nsmall=2)
                for i in range(q):
                    for j in range(i):
                        cells[i][j] = flat[i * q + j]
            corr_cells += cells
        corr_cells.append([""] * (maxlen - 1))
        rows = [r + cc for r, cc in zip(rows, corr_cells, strict=True)]
        colnames += ["Corr"] + [""] * (maxlen - 2)
    out = ["Random effects:", *r_matrix(rows, colnames)]
    ngrps = "; ".join(
        f"{g}, {res.ngroups.get(g, 0)}" for g in dict.fromkeys(b.factor for b in blocks)
    )
    out += r_cat_fill([f"Number of obs: {res.nobs}, groups: ", ngrps], WIDTH)
    return out


def _stars(p: float) -> str:
    if not math.isfinite(p):
        return ""
    for cut, sym in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")):
        if p <= cut:
            return sym
    return " "


def coefmat(names: Sequence[str], columns: dict[str, Sequence[float]]) -> list[str]:
    """R's ``printCoefmat(x, digits = 4)`` of an lme4 or lmerTest coefficient table.

    ``columns``: Estimate, Std. Error, [df,] t value[, Pr(>|t|)] in that order. The columns
    before ``t value`` are rounded together to the decimals the smallest of them needs and
    formatted together; ``t value`` is rounded to 3 decimals; p-values by ``format.pval``, with
    significance stars (and their legend) when one is below 0.1.
    """
    heads = list(columns)
    has_p = heads[-1].startswith("Pr(")
    cs_heads = heads[: len(heads) - (2 if has_p else 1)]
    tst_head = heads[len(cs_heads)]
    dig_tst = max(1, min(5, DIGITS - 1))
    cs = [float(v) for h in cs_heads for v in columns[h]]
    acs = [abs(v) for v in cs if math.isfinite(v) and v != 0]
    digmin = 1 + math.floor(math.log10(min(acs))) if acs else 1
    dec = max(1, DIGITS - digmin)
    p = len(names)
    flat = r_format([r_round(v, dec) for v in cs], DIGITS)
    cells = [[flat[j * p + i] for j in range(len(cs_heads))] for i in range(p)]
    tst = [float(v) for v in columns[tst_head]]
    for i, s in enumerate(r_format([r_round(v, dig_tst) for v in tst], DIGITS)):
        cells[i].append(s)
    for i in range(p):  # a nonzero value printed as zero (or the reverse) gets fewer digits
        for j, h in enumerate([*cs_heads, tst_head]):
            v = float(columns[h][i])
            if math.isfinite(v) and (v == 0) != (float(cells[i][j]) == 0):
                cells[i][j] = r_format([v], DIGITS - 1)[0]
    legend: list[str] = []
    if has_p:
        pv = [float(v) for v in columns[heads[-1]]]
        for i, s in enumerate(r_format_pval(pv, dig_tst)):
            cells[i].append(s)
        if any(math.isfinite(v) and v < 0.1 for v in pv):
            stars = [_stars(v) for v in pv]
            w = max(len(s) for s in stars)
            for i, s in enumerate(stars):
                cells[i].append(s.ljust(w))
            heads = [*heads, ""]
            legend = ["---", SIGNIF_LEGEND]
    return r_matrix(cells, heads, list(names), right=True) + legend


def _correlation(names: Sequence[str], corr: NDArray[np.float64]) -> list[str]:
    """``Correlation of Fixed Effects:`` the lower triangle, names abbreviated as lme4 does."""
    p = len(names)
    if p <= 1:
        return []
    if p > COR_MAX:
        return [
            "",
            f"Correlation matrix not shown by default, as p = {p} > {COR_MAX}.",
            "Use res.vcov if you need it.",
        ]
    rows, cols = r_abbreviate(names, 11), r_abbreviate(names, 6)
    flat = r_format([r_round(float(v), 3) for v in np.asarray(corr).T.ravel()], 7, nsmall=3)
    cells = [[flat[j * p + i] if i > j else "" for j in range(p - 1)] for i in range(1, p)]
    return ["", "Correlation of Fixed Effects:", *r_matrix(cells, cols[:-1], rows[1:])]


def lme4(
    res: FitResult,
    table: pd.DataFrame,
    tests: pd.DataFrame | None,
    corr: NDArray[np.float64],
    resid_quantiles: Sequence[float],
) -> str:
    """The lme4 (lmerTest) summary of a fit.

    Parameters
    ----------
    res : FitResult
    table : DataFrame
        `FitResult.coef_table` (estimates, standard errors, t values).
    tests : DataFrame or None
        ``tiers.api.LmmResult.coef_table(ddf=...)`` (df, t, p-values, the method's SE;
        ``attrs["method"]`` the df method: Satterthwaite's or Kenward-Roger's); None gives plain
        lme4's table.
    corr : array (p, p)
        The correlation matrix of the fixed effects.
    resid_quantiles : five floats
        Min, first quartile, median, third quartile and max of the scaled residuals
        (residuals / sigma).
    """
    method = None if tests is None else str(tests.attrs.get("method", "Satterthwaite"))
    out = _title(res, method) + _formula(res) + [""]
    out += _criterion(res) + [""]
    out += _residuals(resid_quantiles) + [""]
    out += _random_effects(res)
    if res.residual_inference is not None and res.design.residuals is not None:
        lay = res.design.residuals
        spec = lay.spec
        out += nlme_lines(res.residual_inference, lay.group_name, spec.time, spec.by)
    names = [str(n) for n in table.index]
    columns: dict[str, Sequence[float]] = {
        "Estimate": table["estimate"].tolist(),
        "Std. Error": table["std_error"].tolist(),
    }
    if tests is not None:
        columns |= {
            "Std. Error": tests["std_error"].tolist(),
            "df": tests["df"].tolist(),
            "t value": tests["t"].tolist(),
            "Pr(>|t|)": tests["p_value"].tolist(),
        }
    else:
        columns["t value"] = table["z"].tolist()
    out += ["", "Fixed effects:", *coefmat(names, columns)]
    out += _correlation(names, corr)
    if res.is_singular:
        out.append("boundary (singular) fit: see help('isSingular')")
    out += [""] + footer(res, WIDTH)
    return "\n".join(out)
