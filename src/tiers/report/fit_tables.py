"""A fit's numbers as `Table` values: facts, fixed effects, variance components, shares.

The notebook display (HTML, Markdown, LaTeX) and the HTML report render these same tables.
"""

from __future__ import annotations

import math

import pandas as pd

from tiers.results.display import Table
from tiers.results.result import FitResult
from tiers.variance.information import CorrInference, SdInference
from tiers.variance.residual import ResidualInference

__all__ = ["facts", "fit_tables", "fixed_effects", "num", "shares", "variance_components"]


def num(x: float | None, fmt: str = ".6g") -> str:
    """A number as text; missing or non-finite as ``.`` (Stata's missing)."""
    if x is None or not math.isfinite(x):
        return "."
    return format(x, fmt)


def _pct(level: float) -> str:
    return f"{level * 100:.10g}%"


def facts(res: FitResult) -> Table:
    """The header facts: formula, method, observations, groups, criterion, convergence."""
    crit = "REML criterion" if res.reml else "Deviance"
    groups = "; ".join(f"{lv.name}: {lv.ngroups:,}" for lv in res.levels)
    rows = [
        ("Formula", res.formula.text),
        ("Method", f"{res.method} ({res.engine} engine)"),
        ("Observations", f"{res.nobs:,}"),
        ("Groups", groups),
        ("Restricted log-likelihood" if res.reml else "Log-likelihood", num(res.loglik, ".4f")),
        (crit, num(res.criterion, ".1f")),
        ("AIC / BIC", f"{num(res.aic, '.1f')} / {num(res.bic, '.1f')}"),
        ("Converged", "yes" if res.converged else "NO"),
    ]
    return Table.of(f"Linear mixed model fit by {res.method}", None, rows, numeric_from=2)


def fixed_effects(table: pd.DataFrame, level: float, tests: pd.DataFrame | None = None) -> Table:
    """`FitResult.coef_table` (normal tests); with ``tests`` Satterthwaite's df and p-values."""
    pct = _pct(level)
    header = ["", "Estimate", "Std. Error", "z", "P>|z|", f"{pct} lower", f"{pct} upper"]
    if tests is not None:
        header += ["df (Satterthwaite)", "P>|t|"]
    rows = []
    for name, r in table.iterrows():
        row = [str(name), num(r.estimate), num(r.std_error), num(r.z, ".2f"),
               num(r.p_value, ".4f"), num(r.ci_lower), num(r.ci_upper)]  # fmt: skip
        if tests is not None:
            row += [num(tests.loc[name, "df"], ".1f"), num(tests.loc[name, "p_value"], ".4f")]
        rows.append(row)
    return Table.of("Fixed effects", header, rows)


def variance_components(
    sdi: SdInference, ci: CorrInference, rinf: ResidualInference | None = None
) -> Table:
    """SDs (with variances) and correlations, observed-information SEs and intervals.

    ``rinf``: the residual structure's parameters (`tiers.variance.residual`), as rows of their own.
    """
    pct = _pct(sdi.level)
    rows = []
    for (group, term), sd, se, lo, hi in zip(sdi.names, sdi.sd, sdi.se, sdi.lower, sdi.upper,
                                              strict=True):  # fmt: skip
        rows.append((group, f"sd({term})" if term else "sd", num(sd**2),
                     *map(num, (sd, se, lo, hi))))  # fmt: skip
    for (group, a, b), r, se, lo, hi in zip(
        ci.names, ci.estimate, ci.se, ci.lower, ci.upper, strict=True
    ):
        rows.append((group, f"corr({a},{b})", "", *map(num, (r, se, lo, hi))))
    if rinf is not None:
        for k, name in enumerate(rinf.names):
            cells = (rinf.estimate[k], rinf.se[k], rinf.lower[k], rinf.upper[k])
            rows.append((f"Residual: {rinf.structure}", name, "", *map(num, cells)))
    header = ("Group", "Parameter", "Variance", "Estimate", "Std. Error", f"{pct} lower",
              f"{pct} upper")  # fmt: skip
    return Table.of("Variance components", header, rows, numeric_from=2)


def shares(table: pd.DataFrame, *, nested: bool = True) -> Table:
    """Variance shares and ICCs with intervals (`FitResult.variance_shares`).

    ``nested``: the ICCs are cumulative (this level and those above it); for crossed factors
    each ICC is the factor's share.
    """
    level = float(table.attrs.get("level", 0.95))
    pct = _pct(level)
    rows = []
    for _, r in table.iterrows():
        rows.append((str(r["level"]), num(r["variance"]), num(r["share"], ".4f"),
                     num(r["share_lower"], ".4f"), num(r["share_upper"], ".4f"),
                     num(r["icc"], ".4f"), num(r["icc_lower"], ".4f"),
                     num(r["icc_upper"], ".4f")))  # fmt: skip
    header = ("Level", "Variance", "Share", f"{pct} lower", f"{pct} upper", "ICC",
              f"{pct} lower", f"{pct} upper")  # fmt: skip
    method = table.attrs.get("method", "delta")
    which = "this level and every level above it" if nested else "this factor's level only"
    notes = [f"intervals: {method}; ICC: correlation of two observations sharing {which}"]
    return Table.of("Variance shares and intraclass correlations", header, rows, notes=notes)


def fit_tables(
    res: FitResult,
    coef: pd.DataFrame,
    sdi: SdInference,
    ci: CorrInference,
    level: float,
    share_table: pd.DataFrame | None = None,
    tests: pd.DataFrame | None = None,
) -> list[Table]:
    """Facts, fixed effects, variance components and (given) the shares, in that order."""
    rinf = res.residual_inference if abs(level - 0.95) < 1e-12 else res.variance_at(level)[2]
    out = [facts(res), fixed_effects(coef, level, tests), variance_components(sdi, ci, rinf)]
    if share_table is not None:
        out.append(shares(share_table, nested=res.nested))
    return out
