"""The ``tiers`` command line. It parses arguments and prints; the statistics live elsewhere."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from tiers.errors import TiersError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Hierarchical linear mixed models: fit, simulate, explore.",
    pretty_exceptions_enable=False,
)


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


def _write_json(doc: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")


@app.command()
def fit(
    formula: Annotated[
        str, typer.Argument(help="lme4 ('y ~ x + (1 | g)') or Stata ('y x || g:') syntax")
    ],
    data: Annotated[Path, typer.Argument(help="CSV, Parquet or Stata .dta file")],
    ml: Annotated[bool, typer.Option("--ml", help="maximum likelihood instead of REML")] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="also write the results as JSON")
    ] = None,
    style: Annotated[str, typer.Option(help="summary layout: stata or lme4")] = "stata",
    force: Annotated[
        bool, typer.Option("--force", help="fit even if components are not identified")
    ] = False,
    ci: Annotated[
        str | None,
        typer.Option(
            "--ci",
            help="intervals for every parameter: wald, profile, profile-ml (lme4's) or bootstrap; "
            "fixed effects also get Satterthwaite df and p-values",
        ),
    ] = None,
    level: Annotated[float, typer.Option(help="confidence level of --ci")] = 0.95,
    n_boot: Annotated[int, typer.Option("--n-boot", help="replicates of --ci bootstrap")] = 1000,
    seed: Annotated[int | None, typer.Option(help="random seed of --ci bootstrap")] = None,
) -> None:
    """Fit a linear mixed model and print its summary."""
    from tiers.api import fit as fit_model
    from tiers.data.io import read_data
    from tiers.inference.intervals import METHODS

    if style not in ("stata", "lme4"):
        _fail(ValueError(f"--style must be stata or lme4, got {style!r}"))
    if ci is not None and ci not in METHODS:
        _fail(ValueError(f"--ci must be one of {', '.join(METHODS)}; got {ci!r}"))
    if not 0.0 < level < 1.0:
        _fail(ValueError(f"--level must be strictly between 0 and 1 (e.g. 0.95); got {level}"))
    try:
        frame = read_data(data)
        result = fit_model(formula, frame, reml=False if ml else None, force=force)
    except TiersError as exc:
        _fail(exc)
        return
    typer.echo(result.summary(style))  # type: ignore[arg-type]
    doc = result.to_dict() if json_path is not None else {}
    if ci is not None:
        from tiers.report.json import confint_dict
        from tiers.report.text import confint_table

        try:
            intervals = result.confint(ci, level, n_boot=n_boot, seed=seed)
            tests = result.satterthwaite(level)
        except (TiersError, ValueError) as exc:
            _fail(exc)
            return
        typer.echo("")
        typer.echo(confint_table(intervals, tests))
        doc["confint"] = confint_dict(intervals, tests)
    if json_path is not None:
        _write_json(doc, json_path)


@app.command()
def lrtest(
    formula0: Annotated[str, typer.Argument(help="the smaller model")],
    formula1: Annotated[str, typer.Argument(help="the larger model")],
    data: Annotated[Path, typer.Argument(help="CSV, Parquet or Stata .dta file")],
    ml: Annotated[bool, typer.Option("--ml", help="fit both by maximum likelihood")] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="also write the test as JSON")
    ] = None,
) -> None:
    """Likelihood-ratio test of FORMULA0 against FORMULA1 (refuses invalid REML comparisons)."""
    from tiers.api import fit as fit_model
    from tiers.data.io import read_data
    from tiers.inference.lrtest import lrtest as run_lrtest

    try:
        frame = read_data(data)
        reml = False if ml else None
        m0 = fit_model(formula0, frame, reml=reml)
        m1 = fit_model(formula1, frame, reml=reml)
        test = run_lrtest(m0, m1)
    except TiersError as exc:
        _fail(exc)
        return
    typer.echo(test.summary())
    if json_path is not None:
        _write_json(test.to_dict(), json_path)


@app.command()
def xtreg(
    depvar: Annotated[str, typer.Argument(help="the dependent variable")],
    args: Annotated[list[str], typer.Argument(help="regressors, then the data file (last)")],
    id: Annotated[str, typer.Option("--id", help="the panel id column (Stata's xtset)")],
    fe: Annotated[bool, typer.Option("--fe", help="fixed effects (within)")] = False,
    re: Annotated[bool, typer.Option("--re", help="random effects (GLS, Swamy-Arora)")] = False,
    vce: Annotated[str, typer.Option(help="conventional or cluster (by id)")] = "conventional",
    json_path: Annotated[
        Path | None, typer.Option("--json", help="also write the results as JSON")
    ] = None,
) -> None:
    """Panel regression as Stata's xtreg: --fe, --re, or both (then with the Hausman test)."""
    from tiers.data.io import read_data
    from tiers.panel.estimators import fixed_effects, random_effects
    from tiers.panel.hausman import hausman

    if len(args) < 2:
        _fail(
            ValueError(
                "give at least one regressor and the data file: tiers xtreg y x data.csv --id g --fe"
            )
        )
    if not (fe or re):
        _fail(ValueError("choose --fe, --re, or both"))
    if vce not in ("conventional", "cluster"):
        _fail(ValueError(f"--vce must be conventional or cluster, got {vce!r}"))
    regressors, data = args[:-1], Path(args[-1])
    doc: dict = {}
    try:
        frame = read_data(data)
        results = {}
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
        _fail(exc)
        return
    if json_path is not None:
        _write_json(doc, json_path)


@app.command()
def simulate(
    output: Annotated[Path, typer.Option("-o", "--output", help="CSV or Parquet file to write")],
    preset: Annotated[str, typer.Option(help="a built-in design")] = "seed",
    design: Annotated[
        Path | None, typer.Option(help="a TOML/JSON design file instead of a preset")
    ] = None,
    districts: Annotated[int | None, typer.Option(help="top-level units (seed preset)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    restart_ids: Annotated[
        bool, typer.Option("--restart-ids", help="ids restart within each parent")
    ] = False,
) -> None:
    """Simulate a nested design and write it to a file."""
    from tiers.data.io import write_data
    from tiers.simulation.data import PRESETS, load_design
    from tiers.simulation.data import simulate as run_simulation

    try:
        if design is not None:
            spec = load_design(design)
            if districts is not None:
                spec = spec.with_units(spec.levels[0].name, districts)
        else:
            if preset not in PRESETS:
                raise TiersError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
            spec = PRESETS[preset](**({} if districts is None else {"districts": districts}))
        start = time.perf_counter()
        frame = run_simulation(spec, seed, restart_ids=restart_ids)
        write_data(frame, output)
    except TiersError as exc:
        _fail(exc)
        return
    typer.echo(
        f"wrote {len(frame):,} rows x {frame.shape[1]} columns to {output} "
        f"({time.perf_counter() - start:.1f} s)"
    )


@app.command()
def explore(
    districts: Annotated[int, typer.Option(help="districts in the simulated seed design")] = 50,
    seed: Annotated[int, typer.Option(help="random seed")] = 1,
    sizes: Annotated[
        str, typer.Option(help="districts for the 'is the sample too small?' step")
    ] = "5,50,500",
    out: Annotated[
        Path | None, typer.Option(help="also write every table as CSV/JSON here")
    ] = None,
) -> None:
    """Walk through the founding Stata exploration, done right."""
    from tiers.cli.explore import run_exploration

    try:
        size_list = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        _fail(ValueError(f"--sizes must be comma-separated integers, got {sizes!r}"))
        return
    try:
        run_exploration(districts=districts, seed=seed, sizes=size_list, out=out)
    except TiersError as exc:
        _fail(exc)


from tiers.cli.study import register as _register_study  # noqa: E402

_register_study(app)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
