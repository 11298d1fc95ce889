"""``tiers xtreg``: Stata's panel regressions (fixed and random effects, the Hausman test)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tiers.cli.common import StringColOption, check_output, fail, read_frame, write_json
from tiers.cli.dask_options import DaskOption, SchedulerOption, WorkersOption
from tiers.errors import TiersError


def xtreg(
    depvar: Annotated[str, typer.Argument(metavar="DEPVAR", help="the dependent variable")],
    args: Annotated[
        list[str],
        typer.Argument(metavar="INDEPVARS", help="regressors, then the data file (last)"),
    ],
    id: Annotated[
        str, typer.Option("--id", metavar="COLUMN", help="the panel id column (Stata's xtset)")
    ],
    fe: Annotated[
        bool, typer.Option("--fe", help="fixed effects (within)", show_default=False)
    ] = False,
    re: Annotated[
        bool, typer.Option("--re", help="random effects (GLS, Swamy-Arora)", show_default=False)
    ] = False,
    vce: Annotated[
        str, typer.Option(metavar="conventional|cluster", help="standard errors: cluster by id")
    ] = "conventional",
    json_path: Annotated[
        Path | None, typer.Option("--json", help="also write the results as JSON")
    ] = None,
    string_col: StringColOption = None,
    dask: DaskOption = False,
    scheduler: SchedulerOption = None,
    workers: WorkersOption = None,
) -> None:
    """Panel regression as Stata's xtreg: --fe, --re, or both (then with the Hausman test)."""
    from tiers.panel.estimators import fixed_effects, random_effects
    from tiers.panel.hausman import hausman

    if len(args) < 2:
        fail("give at least one regressor and the data file: tiers xtreg y x data.csv --id g --fe")
    if not (fe or re):
        fail("choose --fe, --re, or both")
    if vce not in ("conventional", "cluster"):
        fail(f"--vce must be conventional or cluster, got {vce!r}")
    regressors, data = args[:-1], Path(args[-1])
    check_output(json_path, "--json")
    doc: dict = {}
    if not dask and (scheduler is not None or workers is not None):
        fail("--scheduler and --workers go with --dask")
    try:
        results: dict[str, Any] = {}
        if dask:
            results = _xtreg_dask(
                depvar, regressors, data, id, fe, re, vce, string_col, scheduler, workers
            )
        else:
            frame = read_frame(data, string_col)
            if fe:
                results["fe"] = fixed_effects(frame, depvar, regressors, id, vce=vce)  # type: ignore[arg-type]
            if re:
                results["re"] = random_effects(frame, depvar, regressors, id, vce=vce)  # type: ignore[arg-type]
        for name, res in results.items():
            typer.echo(res.summary())
            typer.echo("")
            doc[name] = res.to_dict()
        if fe and re:
            test = hausman(results["fe"], results["re"])
            typer.echo(test.summary())
            doc["hausman"] = test.to_dict()
    except TiersError as exc:
        fail(exc)
    if json_path is not None:
        write_json(doc, json_path)


def _xtreg_dask(
    depvar: str,
    regressors: list[str],
    data: Path,
    id: str,
    fe: bool,
    re: bool,
    vce: str,
    string_col: list[str] | None,
    scheduler: str | None,
    workers: int | None,
) -> dict[str, Any]:
    """``xtreg --dask``: the estimators from per-group sums on a cluster (closed afterwards)."""
    from tiers.api.reading import read_data
    from tiers.scale import panel
    from tiers.scale.cluster import dask_client

    ddf = read_data(str(data), lazy=True, string_columns=string_col)
    out: dict[str, Any] = {}
    with dask_client(scheduler, workers=workers):
        if fe:
            out["fe"] = panel.fixed_effects(ddf, depvar, regressors, id, vce=vce)
        if re:
            out["re"] = panel.random_effects(ddf, depvar, regressors, id, vce=vce)
    return out


def register(app: typer.Typer) -> None:
    """Add the ``xtreg`` command to the main app."""
    app.command("xtreg")(xtreg)
