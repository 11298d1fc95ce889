"""``tiers report``: fit a model and write its self-contained HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tiers.cli.common import (
    DataArg,
    ForceOption,
    FormulaArg,
    LevelOption,
    MlOption,
    StringColOption,
    check_output,
    confidence_level,
    deferred_warnings,
    fail,
    need_matplotlib,
    read_frame,
    show_warnings,
)
from tiers.errors import TiersError


def report(
    formula: FormulaArg,
    data: DataArg,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="the HTML file to write (its folder must exist)")
    ],
    ml: MlOption = False,
    force: ForceOption = False,
    level: LevelOption = None,
    plots: Annotated[
        bool, typer.Option(help="embed the figures (caterpillar, shrinkage, QQ, residuals, ...)")
    ] = True,
    string_col: StringColOption = None,
) -> None:
    """Fit a linear mixed model and write a self-contained HTML report of it."""
    from tiers.api import fit as fit_model
    from tiers.report.document import write_report

    conf = confidence_level(level) if level is not None else None
    check_output(output, "-o/--output")
    if plots:
        need_matplotlib("tiers report (without --no-plots)")
    try:
        frame = read_frame(data, string_col)
        with deferred_warnings() as caught:  # each shown once, after the work (also in the page)
            result = fit_model(formula, frame, reml=False if ml else None, force=force)
            path = write_report(
                result,
                output,
                level=conf or confidence_level(None, result.formula.level),
                plots=plots,
                option="-o/--output",
            )
    except TiersError as exc:
        fail(exc)
    show_warnings(caught)
    typer.echo(f"wrote the report of {result.formula.text} ({result.nobs:,} rows) to {path}")


def register(app: typer.Typer) -> None:
    """Add ``report`` to the ``tiers`` command line."""
    app.command()(report)
