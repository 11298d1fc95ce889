"""The HTML report of a simulation study (`tiers.study.runner.StudyResult.report`).

One self-contained page: the design and its true values, the study's settings and estimators,
the summary table (bias, empirical SD, RMSE, mean SE, coverage, fit counts per size, estimator and
parameter), what loading a stored study noted, and the three figures of `tiers.study.plots`
embedded as PNG.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from tiers._output import check_output, write_text
from tiers.report import page
from tiers.results.display import Table
from tiers.study.estimators import describe

if TYPE_CHECKING:
    from tiers.study.runner import StudyResult

__all__ = ["study_tables", "write_study_report"]

_SUMMARY = ("size", "estimator", "parameter", "truth", "mean", "bias", "sd", "rmse", "mean_se",
            "coverage", "power", "n_ok", "n_failed", "n_singular")  # fmt: skip


def _cell(v: object) -> str:
    if isinstance(v, float):
        return "." if not math.isfinite(v) else f"{v:.4g}"
    return str(v)


def study_tables(result: StudyResult) -> list[Table]:
    """Design, settings, estimators and summary as tables (notebook display and report)."""
    d = result.design
    truth = d.true_parameters()
    levels = [(lv.name, f"{lv.units:,}", f"{lv.sd:g}") for lv in d.levels]
    if d.is_glmm:  # SDs on the link scale; the outcome has no residual SD
        latent = {"logit": "logistic, pi^2/3", "probit": "normal, 1", "cloglog": "Gumbel, pi^2/6"}
        outcome = f"{d.family} ({d.link} link), {d.obs_per_unit} obs per unit"
        rest = f"latent residual: {latent[str(d.link)]}" if d.link in latent else "."
        if d.exposure is not None:
            lo, hi = d.exposure_range
            rest = f"exposure {d.exposure} uniform on [{lo:g}, {hi:g}]"
        levels.append(("outcome", outcome, rest))
    else:
        levels.append(("residual", f"{d.obs_per_unit} obs per unit", f"{d.residual_sd:g}"))
    tables = [
        Table.of("Design (true values)", ("Level", "Units per parent", "SD"), levels),
        Table.of(
            "Study",
            None,
            [
                ("Varied level", result.level),
                ("Sizes", ", ".join(str(s) for s in result.sizes)),
                ("Replicates per size", f"{result.n_replicates:,}"),
                ("Seed", str(result.seed)),
                ("True parameters", ", ".join(f"{k} = {v:g}" for k, v in truth.items())),
            ],
            numeric_from=2,
        ),  # fmt: skip
        Table.of(
            "Estimators",
            ("Name", "Kind", "Specification"),
            [(e.name, describe(e, d), e.spec) for e in result.estimators],
            numeric_from=3,
        ),  # fmt: skip
    ]
    s = result.summary
    cols = [c for c in _SUMMARY if c in s.columns]
    rows = [[_cell(v) for v in r] for r in s[cols].itertuples(index=False)]
    tables.append(Table.of("Summary over replicates", cols, rows, numeric_from=3))
    return tables


def write_study_report(
    result: StudyResult, path: str | os.PathLike[str], option: str = "path"
) -> Path:
    """Write the study's report to ``path`` (whole or not at all).

    Raises
    ------
    OutputError
        ``path`` cannot be written (a missing folder, a folder, read-only), before any work.
    """
    from tiers.study.plots import lines_figure, sd_figure

    out = check_output(path, option)
    t = study_tables(result)
    figures = [
        page.figure(sd_figure(result), "SD estimates per size; dashed: the true value, where the "
                    "estimator targets it", name="sd_distributions"),
        page.figure(lines_figure(result, "coverage", log=False, nominal=0.95),
                    "Coverage of the reported 95% intervals; band: 2 Monte Carlo SEs",
                    name="coverage"),
        page.figure(lines_figure(result, "rmse", log=True, nominal=None),
                    "RMSE against size (log-log)", name="rmse"),
    ]  # fmt: skip
    body = [
        page.section("Design", t[0].to_html(), t[1].to_html(), t[2].to_html(), anchor="design"),
        page.section("Summary", t[3].to_html(), page.notes(result.notes), anchor="summary"),
        page.section("Figures", *figures, anchor="figures"),
    ]
    title = f"tiers study: {result.n_replicates} replicates at {len(result.sizes)} sizes"
    return write_text(out, page.document(title, body), option)
