"""Publication tables of several fits side by side (R's modelsummary, Stata's esttab/etable).

`table` builds a `Table`: the cells as text, one column per model, in sections (fixed effects,
variance components, ICCs, R-squared, fit statistics) with notes on the method and the df, made
from the fits' `tiers.inference.tidy` rows. The renderings (booktabs LaTeX, Markdown, HTML, a
DataFrame) are in `tiers.report.table_render`; they format, they do not compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from tiers.errors import ComparisonError
from tiers.inference.r2 import r2
from tiers.inference.satterthwaite import Satterthwaite
from tiers.inference.satterthwaite import coef_table as satt_table
from tiers.inference.shares import variance_shares
from tiers.inference.tidy import DF_METHODS, tidy
from tiers.options import check_level, check_option
from tiers.panel.estimators import PanelResult
from tiers.report import table_render
from tiers.report.table_glmm import glmm_column, glmm_method, is_glmm
from tiers.report.table_panel import method, panel_column, signature
from tiers.results.result import FitResult

Statistic = Literal["std_error", "conf_int"]
STATISTICS: tuple[str, ...] = ("std_error", "conf_int")
#: Significance thresholds and their marks (R's and esttab's defaults).
STARS = ((0.001, "***"), (0.01, "**"), (0.05, "*"))
SECTIONS = ("fixed", "variance", "icc", "r2", "fit")
RESIDUAL = "SD (Residual)"


@dataclass(frozen=True, slots=True)
class Row:
    """One line of a table: its section, label, a text per model and significance marks.

    ``secondary`` marks the line under a coefficient (its SE or interval), shown without label.
    """

    section: str
    label: str
    cells: tuple[str, ...]
    stars: tuple[str, ...]
    secondary: bool = False


@dataclass(frozen=True, slots=True)
class Table:
    """Models side by side: rows of text cells in sections, with notes.

    Attributes
    ----------
    models : tuple of str
        Column headings.
    rows : tuple of Row
        In section order (`SECTIONS`).
    notes : tuple of str
        What the cells mean (SEs or intervals, stars, df method, estimation method) and what to
        beware of (models fitted to different data, REML log-likelihoods).
    statistic : {"std_error", "conf_int"}
        What the coefficients' second lines hold.
    """

    models: tuple[str, ...]
    rows: tuple[Row, ...]
    notes: tuple[str, ...]
    statistic: str = "std_error"

    def to_frame(self) -> pd.DataFrame:
        """The cells (marks appended) as a DataFrame indexed by (section, label)."""
        return table_render.frame(self)

    def to_latex(self) -> str:
        r"""A booktabs ``tabular`` (needs ``\usepackage{booktabs}``), notes below it."""
        return table_render.latex(self)

    def to_markdown(self) -> str:
        """A pipe table (GitHub/pandoc Markdown), notes below it."""
        return table_render.markdown(self)

    def to_html(self) -> str:
        """An HTML ``<table>`` with the notes in its ``<tfoot>``."""
        return table_render.html(self)

    def _repr_html_(self) -> str:
        return self.to_html()

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def __str__(self) -> str:
        return self.to_markdown()


def _fmt(x: float, digits: int) -> str:
    return "" if x is None or not np.isfinite(x) else f"{x:,.{digits}f}"


def _marks(p: float) -> str:
    if not np.isfinite(p):
        return ""
    return next((mark for cut, mark in STARS if p < cut), "")


def _column(
    res: FitResult, *, statistic: str, stars: bool, level: float, ddf: str, digits: int
) -> tuple[dict[tuple[str, str], tuple[str, str]], list[str]]:
    """One model's cells by (section, label) and its notes."""
    tests = None
    if ddf == "satterthwaite":  # tiers.LmmResult keeps its derivatives; a bare FitResult does not
        own = getattr(res, "satterthwaite", None)
        tests = own(level) if own else satt_table(res, Satterthwaite.from_result(res), level)
    t = tidy(res, effects=("fixed", "ran_pars"), level=level, ddf=ddf, tests=tests)
    cells: dict[tuple[str, str], tuple[str, str]] = {}
    notes: list[str] = []
    for r in t[t.effect == "fixed"].itertuples():
        mark = _marks(r.p_value) if stars else ""
        cells[("fixed", r.term)] = (_fmt(r.estimate, digits), mark)
        below = (
            f"({_fmt(r.std_error, digits)})"
            if statistic == "std_error"
            else f"[{_fmt(r.conf_low, digits)}, {_fmt(r.conf_high, digits)}]"
        )
        cells[("fixed", f"{r.term} ")] = (below, "")  # the line under the estimate
    for r in t[t.effect == "ran_pars"].itertuples():
        kind, _, effects = r.term.partition("__")
        effects = effects.replace("(Intercept)", "Intercept")
        if r.group == "Residual":
            label = RESIDUAL
        elif kind == "sd":
            label = f"SD ({effects} | {r.group})"
        else:
            label = f"Cor ({effects.replace('.', ', ', 1)} | {r.group})"
        cells[("variance", label)] = (_fmt(r.estimate, digits), "")
    if not res.one_residual_variance:
        notes.append("no ICC or R2 where the residual variance differs by stratum")
    elif res.intercepts_only:
        shares = variance_shares(res, level)
        for s in shares.itertuples():
            if np.isfinite(s.icc):
                cells[("icc", f"ICC ({s.level})")] = (_fmt(s.icc, digits), "")
    else:
        notes.append("no ICC with random slopes: the share of a level depends on the covariates")
    if res.one_residual_variance:
        rsq = r2(res)
        cells[("r2", "R2 marginal")] = (_fmt(rsq.marginal, digits), "")
        cells[("r2", "R2 conditional")] = (_fmt(rsq.conditional, digits), "")
    cells[("fit", "N")] = (f"{res.nobs:,}", "")
    for name, n in res.ngroups.items():
        cells[("fit", f"Groups ({name})")] = (f"{n:,}", "")
    cells[("fit", "Log-likelihood")] = (_fmt(res.loglik, 1), "")
    cells[("fit", "AIC")] = (_fmt(res.aic, 1), "")
    cells[("fit", "BIC")] = (_fmt(res.bic, 1), "")
    cells[("fit", "Method")] = (res.method, "")
    return cells, notes


def _nobs(m: Any) -> int:
    return int(m.fit.nobs if is_glmm(m) else m.nobs)


def _data_notes(models: tuple[Any, ...], names: list[str]) -> list[str]:
    """Notes on models fitted to different rows or on likelihoods that do not compare."""
    notes = []
    sigs = [signature(m) for m in models]
    known = all(s is not None for s in sigs)  # panel results and GLMMs keep none: N only
    samples = {(_nobs(m), s if known else None) for m, s in zip(models, sigs, strict=True)}
    if len(samples) > 1:
        sizes = ", ".join(f"{n} N = {_nobs(m):,}" for n, m in zip(names, models, strict=True))
        notes.append(
            f"The models were fitted to different data ({sizes}): their estimates come from "
            "different samples and their log-likelihoods, AIC and BIC do not compare"
        )
    if any(getattr(m, "reml", False) for m in models):
        notes.append(
            "REML log-likelihoods (and AIC, BIC) compare only models with the same fixed effects"
        )
    return notes


def table(
    *models: Any,
    names: list[str] | None = None,
    statistic: str = "std_error",
    stars: bool = False,
    level: float = 0.95,
    ddf: str = "normal",
    digits: int = 3,
    exponentiate: bool = False,
) -> Table:
    """Several fits side by side, as modelsummary and esttab lay them out.

    Parameters
    ----------
    *models : FitResult, GlmmResult or PanelResult
        Fits (`tiers.fit`, linear or GLMM, and `tiers.panel` estimators, as esttab puts ``xtreg``
        next to ``mixed``); models fitted to different data are shown with a note, as esttab does.
    names : list of str, optional
        Column headings (default ``(1)``, ``(2)``, ...).
    statistic : {"std_error", "conf_int"}
        Under each coefficient: its standard error in parentheses or its interval in brackets.
    stars : bool
        Mark coefficients with ``*`` p < 0.05, ``**`` p < 0.01, ``***`` p < 0.001.
    level : float
        Of the intervals.
    ddf : {"normal", "satterthwaite"}
        p-values and intervals of the fixed effects: normal (Stata's z) or t with Satterthwaite's
        df (lmerTest's).
    digits : int
        Decimals of the estimates (log-likelihood, AIC and BIC get one).
    exponentiate : bool
        GLMMs' coefficients as odds ratios (logit) or rate ratios (log), with delta-method SEs
        (Stata's ``eform``); default the link scale. Needs a GLMM among the models.

    Returns
    -------
    Table
        With ``to_latex``, ``to_markdown``, ``to_html``, ``to_frame``.

    Raises
    ------
    ComparisonError
        No model, an argument that is not a fit, or names that do not match the models.
    """
    if not models:
        raise ComparisonError("table needs at least one fitted model")
    for i, m in enumerate(models):
        if not isinstance(m, FitResult | PanelResult) and not is_glmm(m):
            raise ComparisonError(
                f"table takes fits of tiers.fit or tiers.panel; argument {i + 1} is a "
                f"{type(m).__name__}"
            )
    if not isinstance(exponentiate, bool):
        raise TypeError(f"exponentiate must be True or False; got {exponentiate!r}")
    if exponentiate and not any(is_glmm(m) for m in models):
        raise ComparisonError(
            "exponentiate=True shows GLMMs' odds or rate ratios; none of the models is a GLMM "
            "(fit one with tiers.fit(..., family=...)), or leave exponentiate out"
        )
    check_option(statistic, STATISTICS, "statistic")
    check_option(ddf, DF_METHODS, "ddf")
    check_level(level)
    if not isinstance(stars, bool):
        raise TypeError(f"stars must be True or False; got {stars!r}")
    if isinstance(digits, bool) or not isinstance(digits, int) or not 0 <= digits <= 12:
        raise ValueError(f"digits must be an integer from 0 to 12; got {digits!r}")
    heads = names if names is not None else [f"({i + 1})" for i in range(len(models))]
    if len(heads) != len(models) or len(set(heads)) != len(heads):
        raise ComparisonError(f"give {len(models)} distinct names, one per model; got {heads}")
    columns, notes = [], []
    for head, m in zip(heads, models, strict=True):
        if is_glmm(m):
            cells, own = glmm_column(
                m, statistic=statistic, stars=stars, level=level, exponentiate=exponentiate,
                digits=digits, fmt=_fmt, marks=_marks,
            )  # fmt: skip
            if ddf != "normal":
                own.append("a GLMM's tests are Wald z (no Satterthwaite df)")
        elif isinstance(m, PanelResult):
            cells, own = panel_column(
                m, statistic=statistic, stars=stars, level=level, digits=digits, fmt=_fmt,
                marks=_marks, residual=RESIDUAL,
            )  # fmt: skip
        else:
            cells, own = _column(
                m, statistic=statistic, stars=stars, level=level, ddf=ddf, digits=digits
            )
        columns.append(cells)
        notes += [f"{head}: {n}" for n in own]
    keys = list(dict.fromkeys(k for c in columns for k in c))
    # stable: first-seen order within a section, the residual SD last among the variances
    keys.sort(key=lambda k: (SECTIONS.index(k[0]), k[1] == RESIDUAL))
    rows = tuple(
        Row(
            section=sec,
            label=label.rstrip(),
            cells=tuple(c.get((sec, label), ("", ""))[0] for c in columns),
            stars=tuple(c.get((sec, label), ("", ""))[1] for c in columns),
            secondary=label.endswith(" "),
        )
        for sec, label in keys
    )
    what = (
        "Standard errors in parentheses"
        if statistic == "std_error"
        else f"{level:.0%} confidence intervals in brackets"
    )
    mixed = any(isinstance(m, FitResult) or is_glmm(m) for m in models)
    df_words = "normal (z)" if ddf == "normal" else "t with Satterthwaite's df"
    head_notes = [f"{what}; mixed models' fixed-effect tests {df_words}" if mixed else what]
    if stars:
        head_notes.append("* p < 0.05, ** p < 0.01, *** p < 0.001")
    methods = sorted({glmm_method(m.fit) if is_glmm(m) else method(m) for m in models})
    r2_words = ["R2 marginal and conditional of Nakagawa & Schielzeth"] if mixed else []
    r2_words += ["R2 within, between and overall as Stata's xtreg"] * (
        any(isinstance(m, PanelResult) for m in models)
    )
    head_notes.append(
        f"Estimated by {' and '.join(methods)}; variance components as SDs and correlations; "
        + "; ".join(r2_words)
    )
    return Table(
        models=tuple(heads),
        rows=rows,
        notes=tuple(head_notes + _data_notes(models, heads) + notes),
        statistic=statistic,
    )
