"""A fit as HTML tables for notebooks (``_repr_html_``).

The header facts, the fixed effects, the variance components and (for random-intercept models)
the variance shares, as real ``<table>`` elements (columns stay aligned in exported notebooks,
where a ``<pre>`` turns proportional). The cells are `tiers.report.fit_tables`'s, shared with the
Markdown and LaTeX displays and the HTML report.
"""

from __future__ import annotations

import pandas as pd

from tiers.report.fit_tables import fit_tables
from tiers.results.display import html_tables
from tiers.results.result import FitResult
from tiers.variance.information import CorrInference, SdInference


def result_html(
    res: FitResult,
    table: pd.DataFrame,
    sdi: SdInference,
    ci: CorrInference,
    level: float,
    shares: pd.DataFrame | None = None,
) -> str:
    """The fit as HTML tables: facts, fixed effects, variance components (and shares).

    Parameters
    ----------
    res : FitResult
    table : DataFrame
        `FitResult.coef_table` at ``level``.
    sdi, ci : SdInference, CorrInference
        The variance parameters with their intervals at ``level``.
    level : float
        Confidence level of the intervals (for the headers).
    shares : DataFrame, optional
        `FitResult.variance_shares` (random-intercept models).
    """
    tables = fit_tables(res, table, sdi, ci, level, shares)
    return html_tables(tables, [*res.notes, *res.warnings], cls="tiers-result")
