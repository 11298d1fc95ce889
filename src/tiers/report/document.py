"""The HTML report of one fit (``tiers report``, `tiers.LmmResult.report`): one self-contained page.

Sections: the model in both syntaxes; the data (rows used and dropped, and why); the design and
the diagnostics' notes; the fixed effects (with Satterthwaite's df where they can be had); the
variance components; the variance shares and ICCs with intervals (random-intercept models); the
likelihood-ratio test against the linear model; the optimizer's convergence certificate; and the
figures of `tiers.report.plots`, embedded as PNG. `gather` collects the numbers, `render` writes
the page from them and computes nothing.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tiers._output import check_output, write_text
from tiers.formula.render import render as render_formula
from tiers.inference.intervals import variance_shares
from tiers.inference.satterthwaite import Satterthwaite, coef_table
from tiers.options import check_level
from tiers.report import page
from tiers.report.fit_tables import facts, fixed_effects, num, shares, variance_components
from tiers.results.display import Table
from tiers.results.result import FitResult

__all__ = ["FitReport", "gather", "render", "write_report"]

#: Captions of the figures, by kind (`tiers.report.plots.KINDS`).
CAPTIONS = {
    "caterpillar": "Conditional modes with 95% intervals, per grouping factor and effect, sorted",
    "shrinkage": "Conditional modes against each group's own OLS estimate (y = x: no shrinkage)",
    "qq_ranef": "Normal QQ plots of the conditional modes",
    "residuals_fitted": "Scaled residuals against fitted values, with means in 20 bins",
    "qq_residuals": "Normal QQ plot of the scaled residuals",
    "shares": "Each level's share of the variance, with 95% intervals",
    "zeta": "Profile zeta of the variance parameters: straight lines mean Wald intervals are "
    "accurate",
}


@dataclass(frozen=True)
class FitReport:
    """Everything the page shows, computed: the fit, its tables and its figures."""

    res: FitResult
    level: float
    coef: pd.DataFrame
    tests: pd.DataFrame | None
    shares: pd.DataFrame | None
    figures: tuple[tuple[str, Any], ...] = ()
    notes: tuple[str, ...] = field(default=())


def gather(res: FitResult, *, level: float = 0.95, plots: bool = True) -> FitReport:
    """Compute the report's numbers and figures (the figures only with ``plots``)."""
    notes: list[str] = []
    try:  # Satterthwaite's df need a Hessian; where it is singular, the normal tests only
        sat = Satterthwaite.from_result(res)
        tests: pd.DataFrame | None = coef_table(res, sat, level)
    except (np.linalg.LinAlgError, FloatingPointError) as exc:
        tests = None
        notes.append(f"no Satterthwaite df: {exc}")
    share_table = (
        variance_shares(res, level) if res.intercepts_only and res.one_residual_variance else None
    )
    figures: list[tuple[str, Any]] = []
    if plots:
        from tiers.report.plots.write import available, figure_of

        kinds, why = available(res)
        notes += why
        figures = [(k, figure_of(res, k)) for k in kinds]
    return FitReport(res, level, res.coef_table(level), tests, share_table, tuple(figures),
                     tuple(notes))  # fmt: skip


def _stata(res: FitResult) -> str:
    """The model in Stata's ``mixed`` syntax, or why it has no direct spelling there.

    Stata reads ``|| a: || b:`` as b nested in a; crossed factors are written ``|| _all: R.a``
    (an identity covariance over the levels of ``a``), which holds random intercepts only.
    """
    f = res.formula
    method = ", reml" if res.reml else ", mle"
    if f.syntax == "stata":
        return f"mixed {f.text}" + ("" if "," in f.text.rsplit("||", 1)[-1] else method)
    if res.nested:
        return f"mixed {render_formula(dataclasses.replace(f, syntax='stata'))}{method}"
    if all(t.is_intercept_only and len(t.group) == 1 for t in f.random):
        terms = tuple(dataclasses.replace(t, covariance="identity") for t in f.random)
        crossed = dataclasses.replace(f, syntax="stata", random=terms)
        return f"mixed {render_formula(crossed)}{method}"
    return (
        "no direct spelling in Stata's mixed: crossed factors with slopes or interactions need "
        "egen group() and _all: R. terms"
    )


def _model(res: FitResult) -> Table:
    lme4 = render_formula(dataclasses.replace(res.formula, syntax="lme4"))
    rows = [
        ("As written", res.formula.text),
        ("lme4 (R)", f"lmer({lme4}, REML = {'TRUE' if res.reml else 'FALSE'})"),
        ("Stata", _stata(res)),
    ]
    return Table.of("The model in both syntaxes", None, rows, numeric_from=2)


def _data(res: FitResult) -> Table:
    frame = res.design.frame
    rows = [("Source", frame.source or "a DataFrame"),
            ("Rows used", f"{res.nobs:,}"),
            ("Rows dropped", f"{res.n_dropped:,}")]  # fmt: skip
    for col, n in frame.dropped_by_column.items():
        if n:
            rows.append((f"  missing {col}", f"{int(n):,}"))
    if frame.omitted:
        rows.append(("Columns omitted (collinear)", ", ".join(frame.omitted)))
    return Table.of("Data", None, rows, numeric_from=2, notes=frame.read_notes)


def _levels(res: FitResult) -> Table:
    rows = [(lv.name, f"{lv.ngroups:,}", f"{lv.min_obs:,}", f"{lv.mean_obs:.1f}",
             f"{lv.max_obs:,}", "yes" if lv.implicit else "no") for lv in res.levels]  # fmt: skip
    header = ("Grouping factor", "Groups", "Min obs", "Mean obs", "Max obs", "Implicit nesting")
    return Table.of(f"Design ({res.engine} engine)", header, rows)


def _certificate(res: FitResult) -> Table:
    opt = res.opt
    grad = np.asarray(opt.gradient, dtype=float)
    rows = [
        ("Converged", "yes" if opt.converged else "NO"),
        ("Outcome", opt.message),
        ("Optimizer", opt.optimizer),
        ("Evaluations", f"{opt.n_evaluations:,}"),
        ("Max |gradient|", num(float(np.max(np.abs(grad))) if grad.size else 0.0, ".3g")),
        ("Newton step (scaled gradient)", num(opt.newton_step, ".3g")),
        ("theta", ", ".join(num(t, ".6g") for t in opt.theta)),
        ("theta on its bound (singular)", ", ".join(
            str(i) for i, b in enumerate(opt.at_bound) if b) or "none"),
        ("Seconds (optimizer / whole fit)", f"{opt.seconds:.3f} / {res.fit_seconds:.3f}"),
    ]  # fmt: skip
    return Table.of("Convergence certificate", None, rows, numeric_from=2)


def _lr(res: FitResult) -> Table:
    t = res.lr_linear
    rows = [("Test", t.test), ("chi2", num(t.chi2, ".2f")), ("p-value", num(t.p_value, ".4g")),
            ("Why this reference", t.reason)]  # fmt: skip
    return Table.of("Likelihood-ratio test against the linear model", None, rows, numeric_from=2)


def _footer() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"Written by tiers {version('tiers')}; self-contained: no network needed."
    except PackageNotFoundError:  # running from a source tree
        return "Written by tiers; self-contained: no network needed."


def write_report(
    res: FitResult,
    path: str | os.PathLike[str],
    *,
    level: float = 0.95,
    plots: bool = True,
    option: str = "path",
) -> Path:
    """Write the report of ``res`` to ``path`` (whole or not at all).

    Raises
    ------
    OutputError
        ``path`` cannot be written (its folder does not exist, it is a folder, read-only), before
        anything is computed.
    """
    check_level(level)
    out = check_output(path, option)
    html = render(gather(res, level=level, plots=plots))
    return write_text(out, html, option)


def render(rep: FitReport, *, footer: str | None = None) -> str:
    """The page of a gathered report."""
    res = rep.res
    design_notes = [*res.design.warnings, *res.design.response_warnings, *res.notes]
    warnings = list(res.warnings)
    body = [
        page.section("Model", _model(res).to_html(), facts(res).to_html(), anchor="model"),
        page.section("Data", _data(res).to_html(), anchor="data"),
        page.section(
            "Design and diagnostics",
            _levels(res).to_html(),
            page.notes(warnings, cls="warning") + page.notes(design_notes)
            or '<p class="note">The diagnostics found nothing to report.</p>',
            anchor="design",
        ),
        page.section(
            "Fixed effects", fixed_effects(rep.coef, rep.level, rep.tests).to_html(), anchor="fixed"
        ),
        page.section(
            "Variance components",
            variance_components(
                res.sd_inference, res.corr_inference, res.residual_inference
            ).to_html(),
            _lr(res).to_html(),
            anchor="variance",
        ),
    ]
    if rep.shares is not None:
        body.append(page.section("Variance shares and ICCs", shares(rep.shares, nested=res.nested).to_html(),
                                 anchor="shares"))  # fmt: skip
    body.append(page.section("Convergence", _certificate(res).to_html(), anchor="convergence"))
    if rep.figures or rep.notes:
        figs = [page.figure(fig, CAPTIONS.get(kind, kind), name=kind) for kind, fig in rep.figures]
        body.append(page.section("Figures", *figs, page.notes(rep.notes), anchor="figures"))
    foot = _footer() if footer is None else footer
    return page.document(f"tiers report: {res.formula.text}", body, footer=foot)
