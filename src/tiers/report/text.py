"""Plain-text reports: the summaries and the table of intervals.

The summaries are in Stata's ``mixed`` layout (`tiers.report.stata`) and in lme4's
``summary(lmer)`` layout (`tiers.report.lme4`).
"""

from __future__ import annotations

import math

import pandas as pd

from tiers.report.lme4 import lme4
from tiers.report.stata import RULE, shares_table, stata

__all__ = ["confint_table", "lme4", "shares_table", "stata"]


def _table(rows: list[list[str]], align: list[str]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [
            c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align, strict=True)
        ]
        lines.append(" " + " ".join(cells).rstrip())
    return lines


_METHOD_TITLE = {
    "wald": "Wald",
    "profile": "profile likelihood",
    "profile-ml": "profile likelihood (ML refit, as lme4)",
    "bootstrap": "parametric bootstrap, percentile",
}


#: What the df and P>|t| columns of `confint_table` are, by df method.
_TESTS_NOTE = {
    "": "df, P>|t|: t tests with Satterthwaite's degrees of freedom (lmerTest's method)",
    "Satterthwaite": "df, P>|t|: t tests with Satterthwaite's degrees of freedom (lmerTest's method)",
    "Kenward-Roger": "df, P>|t|: t tests with Kenward-Roger's degrees of freedom and adjusted SEs "
    "(pbkrtest's method)",
}


def confint_table(ci: pd.DataFrame, tests: pd.DataFrame | None = None) -> str:
    """Intervals from `FitResult.confint`.

    With ``tests`` (``LmmResult.coef_table(ddf=...)``), the fixed effects' df and p-values next
    to them (Satterthwaite's or Kenward-Roger's, ``tests.attrs["method"]``).
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
        out.append(_TESTS_NOTE.get(tests.attrs.get("method", "Satterthwaite"), _TESTS_NOTE[""]))
    out += [f"Note: {n}" for n in a.get("notes", [])]
    return "\n".join(out)


def _num(x: float) -> str:
    if x is None or math.isnan(x):
        return "."
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.6g}"
