"""``tiers lrtest``: a likelihood-ratio test of two nested models on the same data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tiers.cli.common import DataArg, StringColOption, check_output, fail, read_frame, write_json
from tiers.errors import TiersError


def lrtest(
    formula0: Annotated[str, typer.Argument(metavar="FORMULA0", help="the smaller model")],
    formula1: Annotated[str, typer.Argument(metavar="FORMULA1", help="the larger model")],
    data: DataArg,
    ml: Annotated[
        bool, typer.Option("--ml", help="fit both by maximum likelihood", show_default=False)
    ] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="also write the test as JSON")
    ] = None,
    string_col: StringColOption = None,
) -> None:
    """Likelihood-ratio test of FORMULA0 against FORMULA1 (refuses invalid REML comparisons)."""
    from tiers.api import fit as fit_model
    from tiers.inference.lrtest import lrtest as run_lrtest

    check_output(json_path, "--json")
    try:
        frame = read_frame(data, string_col)
        reml = False if ml else None
        m0 = fit_model(formula0, frame, reml=reml)
        m1 = fit_model(formula1, frame, reml=reml)
        test = run_lrtest(m0, m1)
    except TiersError as exc:
        fail(exc)
    typer.echo(test.summary())
    if json_path is not None:
        write_json(test.to_dict(), json_path)


def register(app: typer.Typer) -> None:
    """Add the ``lrtest`` command to the main app."""
    app.command("lrtest")(lrtest)
