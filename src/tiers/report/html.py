"""A fit as HTML tables for notebooks (``_repr_html_``).

The header facts, the fixed effects and the variance components, as real ``<table>`` elements
(columns stay aligned in exported notebooks, where a ``<pre>`` turns proportional).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from html import escape

import pandas as pd

from tiers.results.result import FitResult
from tiers.variance.information import CorrInference, SdInference

_NUM = "text-align:right;font-variant-numeric:tabular-nums"
_TABLE = 'style="border-collapse:collapse;margin-bottom:0.6em"'


def _num(x: float, fmt: str = ".6g") -> str:
    if x is None or not math.isfinite(x):
        return "."
    return format(x, fmt)


def _row(cells: Sequence[str], *, header: bool = False, numeric_from: int = 1) -> str:
    tag = "th" if header else "td"
    out = []
    for i, c in enumerate(cells):
        style = f' style="{_NUM}"' if i >= numeric_from else ' style="text-align:left"'
        out.append(f"<{tag}{style}>{escape(c)}</{tag}>")
    return "<tr>" + "".join(out) + "</tr>"


def _table(
    caption: str, head: Sequence[str] | None, rows: Iterable[Sequence[str]], start: int = 1
) -> str:
    body = "".join(_row(r, numeric_from=start) for r in rows)
    thead = "" if head is None else f"<thead>{_row(head, header=True, numeric_from=start)}</thead>"
    return (
        f'<table {_TABLE}><caption style="text-align:left;font-weight:bold">'
        f"{escape(caption)}</caption>{thead}<tbody>{body}</tbody></table>"
    )


def result_html(
    res: FitResult, table: pd.DataFrame, sdi: SdInference, ci: CorrInference, level: float
) -> str:
    """The fit as three HTML tables: facts, fixed effects, variance components.

    Parameters
    ----------
    res : FitResult
    table : DataFrame
        `FitResult.coef_table` at ``level``.
    sdi, ci : SdInference, CorrInference
        The variance parameters with their intervals at ``level``.
    level : float
        Confidence level of the intervals (for the headers).
    """
    pct = f"{level * 100:.10g}%"
    crit = (
        ("REML criterion", _num(res.criterion, ".1f"))
        if res.reml
        else ("Deviance", _num(res.criterion, ".1f"))
    )
    groups = "; ".join(f"{lv.name}: {lv.ngroups:,}" for lv in res.levels)
    facts = [
        ("Formula", res.formula.text),
        ("Method", f"{res.method} ({res.engine} engine)"),
        ("Observations", f"{res.nobs:,}"),
        ("Groups", groups),
        (
            "Log-likelihood" if not res.reml else "Restricted log-likelihood",
            _num(res.loglik, ".4f"),
        ),
        crit,
        ("AIC / BIC", f"{_num(res.aic, '.1f')} / {_num(res.bic, '.1f')}"),
        ("Converged", "yes" if res.converged else "NO"),
    ]
    parts = [_table(f"Linear mixed model fit by {res.method}", None, facts, start=2)]
    fe_rows = [
        (
            str(name),
            _num(r.estimate),
            _num(r.std_error),
            _num(r.z, ".2f"),
            _num(r.p_value, ".4f"),
            _num(r.ci_lower),
            _num(r.ci_upper),
        )
        for name, r in table.iterrows()
    ]
    parts.append(
        _table(
            "Fixed effects",
            ("", "Estimate", "Std. Error", "z", "P>|z|", f"{pct} lower", f"{pct} upper"),
            fe_rows,
        )
    )
    re_rows = []
    for (group, term), *vals in zip(sdi.names, sdi.sd, sdi.se, sdi.lower, sdi.upper, strict=True):
        sd, se, lo, hi = vals
        re_rows.append(
            (group, f"sd({term})" if term else "sd", _num(sd**2), *map(_num, (sd, se, lo, hi)))
        )
    for (group, a, b), r, se, lo, hi in zip(
        ci.names, ci.estimate, ci.se, ci.lower, ci.upper, strict=True
    ):
        re_rows.append((group, f"corr({a},{b})", "", *map(_num, (r, se, lo, hi))))
    rinf = res.residual_inference if abs(level - 0.95) < 1e-12 else res.variance_at(level)[2]
    if rinf is not None:  # the residual structure's parameters (tiers.variance.residual)
        for k, name in enumerate(rinf.names):
            cells = (rinf.estimate[k], rinf.se[k], rinf.lower[k], rinf.upper[k])
            re_rows.append((f"Residual: {rinf.structure}", name, "", *map(_num, cells)))
    parts.append(
        _table(
            "Variance components",
            (
                "Group",
                "Parameter",
                "Variance",
                "Estimate",
                "Std. Error",
                f"{pct} lower",
                f"{pct} upper",
            ),  # fmt: skip
            re_rows,
            start=2,
        )
    )
    notes = [*res.notes, *res.warnings]
    if notes:
        parts.append("<p>" + "<br>".join(escape(n) for n in notes) + "</p>")
    return '<div class="tiers-result">' + "".join(parts) + "</div>"
