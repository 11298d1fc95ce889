"""The ``tiers`` command line. It parses arguments and prints; the statistics live elsewhere."""

from __future__ import annotations

import atexit
import gc
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tiers.cli import lrtest as lrtest_cli
from tiers.cli import predict, study
from tiers.cli import report as report_cli
from tiers.cli import simulate as simulate_cli
from tiers.cli import xtreg as xtreg_cli
from tiers.cli.common import (
    DataArg,
    ForceOption,
    FormulaArg,
    LevelOption,
    MlOption,
    StringColOption,
    check_output,
    check_seed,
    confidence_level,
    deferred_warnings,
    fail,
    need_matplotlib,
    read_frame,
    show_warnings,
    tidy_warnings,
    write_json,
)
from tiers.cli.dask_options import DaskOption, SchedulerOption, WorkersOption
from tiers.errors import TiersError

if TYPE_CHECKING:
    from tiers.api.result import Ddf

#: ``--table`` formats and the `tiers.report.table.Table` method that renders each.
TABLE_FORMATS = {"tex": "to_latex", "md": "to_markdown", "html": "to_html"}

if TYPE_CHECKING:
    from tiers.api import LmmResult

app = typer.Typer(
    no_args_is_help=True,
    help="Hierarchical linear mixed models: fit, simulate, explore.",
    epilog="Shell completion: tiers --install-completion (bash, zsh, fish, PowerShell).",
    pretty_exceptions_enable=False,
    # plain help: flags without a <bool> type, no box drawing when piped or in a log
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from tiers import __version__

        typer.echo(f"tiers {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
            show_default=False,
        ),
    ] = False,
) -> None:
    """Hierarchical linear mixed models: fit, simulate, explore."""
    tidy_warnings()


#: ``--ddf`` values and the `tiers.LmmResult.coef_table` ``ddf`` each one asks for.
_DDF: dict[str, Ddf] = {
    "normal": "normal",
    "satterthwaite": "satterthwaite",
    "kr": "kenward-roger",
}


@app.command()
def fit(
    formula: FormulaArg,
    data: DataArg,
    ml: MlOption = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="also write the results as JSON")
    ] = None,
    style: Annotated[
        str, typer.Option(metavar="stata|lme4", help="summary layout: Stata's or lme4's")
    ] = "stata",
    force: ForceOption = False,
    ci: Annotated[
        str | None,
        typer.Option(
            "--ci",
            metavar="METHOD",
            help="intervals for every parameter: wald, profile, profile-ml (lme4's) or bootstrap; "
            "fixed effects also get Satterthwaite df and p-values",
        ),
    ] = None,
    level: LevelOption = None,
    ddf: Annotated[
        str | None,
        typer.Option(
            "--ddf",
            metavar="normal|satterthwaite|kr",
            help="the fixed effects' tests in the summary and --ci: normal (z), or t tests with "
            "Satterthwaite's or Kenward-Roger's df (kr: REML only). Default: the formula's "
            "dfmethod(), else normal in Stata's layout and satterthwaite in lme4's and --ci",
        ),
    ] = None,
    n_boot: Annotated[int, typer.Option("--n-boot", help="replicates of --ci bootstrap")] = 1000,
    seed: Annotated[int | None, typer.Option(help="random seed of --ci bootstrap")] = None,
    progress: Annotated[
        bool, typer.Option(help="progress of --ci bootstrap on stderr (plain lines in a log)")
    ] = True,
    string_col: StringColOption = None,
    max_params: Annotated[
        int | None,
        typer.Option(
            "--max-params",
            help="most covariance parameters a model may have before it is refused "
            "(default 2,000; tiers.Limits)",
        ),
    ] = None,
    max_seconds: Annotated[
        float | None,
        typer.Option(
            "--max-seconds", help="longest estimated fitting time before a model is refused"
        ),
    ] = None,
    pool: Annotated[
        bool,
        typer.Option(
            "--pool",
            help="DATA is a quoted pattern of imputed data sets ('imp_*.csv'): fit each and "
            "combine the fits by Rubin's rules",
            show_default=False,
        ),
    ] = False,
    table: Annotated[
        str | None,
        typer.Option(
            "--table",
            metavar="tex|md|html",
            help="print a publication table (LaTeX booktabs, Markdown or HTML) instead of the "
            "summary",
        ),
    ] = None,
    plots: Annotated[
        Path | None,
        typer.Option(
            "--plots",
            metavar="DIR",
            help="also write the fit's figures (caterpillar, shrinkage, QQ, residuals, shares, "
            "profile zeta) as PNG into DIR",
        ),
    ] = None,
    residuals: Annotated[
        str | None,
        typer.Option(
            "--residuals",
            metavar="STRUCTURE",
            help="residual structure within the innermost group, as Stata's residuals(): "
            "'ar 1, t(wave)', 'toeplitz 2, t(wave)', 'ma 2, t(wave)', 'banded 1, t(wave)', "
            "'exchangeable', "
            "'independent, by(stratum)', "
            "'unstructured, t(wave)'; "
            "also 'car 1, t(months)', group(column) for residual groups inside the innermost "
            "level, and by() with a correlation (one correlation, an SD per stratum)",
        ),
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights",
            metavar="COLUMN",
            help="weight column: precision weights (lme4's weights=) unless --weight-type says "
            "otherwise; sampling weights per level go in Stata syntax ([pw=w1] || school:, "
            "pweight(w2))",
        ),
    ] = None,
    weight_type: Annotated[
        str | None,
        typer.Option(
            "--weight-type", metavar="precision|frequency|sampling", help="what --weights are"
        ),
    ] = None,
    vce: Annotated[
        str,
        typer.Option(
            "--vce",
            metavar="model|robust|cr2",
            help="standard errors: the model's, the sandwich clustered on the top level (fitted "
            "by ML), or CR2 with Satterthwaite df for the fixed effects",
        ),
    ] = "model",
    dask: DaskOption = False,
    scheduler: SchedulerOption = None,
    workers: WorkersOption = None,
    family: Annotated[
        str | None,
        typer.Option(help="fit a GLMM: binomial or poisson (or a melogit/mepoisson formula)"),
    ] = None,
    link: Annotated[
        str | None, typer.Option(help="GLMM link: logit, probit, cloglog (binomial); log")
    ] = None,
    nagq: Annotated[
        int | None, typer.Option(help="GLMM adaptive quadrature points (1: Laplace)")
    ] = None,
    trials: Annotated[str | None, typer.Option(help="GLMM: column of binomial trials")] = None,
    exponentiate: Annotated[
        bool, typer.Option("--or", "--irr", help="GLMM: odds ratios / incidence-rate ratios")
    ] = False,
) -> None:
    """Fit a linear mixed model (or a GLMM with --family) and print its summary."""
    from tiers.api import fit as fit_model
    from tiers.formula.residuals import parse_residuals
    from tiers.inference.intervals import METHODS

    if style not in ("stata", "lme4"):
        fail(f"--style must be stata or lme4, got {style!r}")
    if table is not None and table not in TABLE_FORMATS:
        fail(f"--table must be one of {', '.join(TABLE_FORMATS)}; got {table!r}")
    if ci is not None and ci not in METHODS:
        fail(f"--ci must be one of {', '.join(METHODS)}; got {ci!r}")
    ddf_method = _DDF.get(ddf) if ddf is not None else None
    if ddf is not None and ddf_method is None:
        fail(f"--ddf must be one of {', '.join(_DDF)}; got {ddf!r}")
    if level is not None:
        confidence_level(level)  # refuse a bad --level before fitting
    check_seed(seed)
    check_output(json_path, "--json")
    check_output(plots, "--plots", folder=True)
    if plots is not None:
        need_matplotlib("--plots")
    if dask and (pool or plots is not None):
        fail(
            "--dask takes no --pool or --plots: pooling reads each imputed data set in memory, "
            "and the figures of residuals need the rows"
        )
    if pool:
        from tiers.cli.pool import run_pool

        if ci is not None or table is not None or style != "stata" or plots is not None:
            fail(
                "--pool prints the pooled estimates; it takes no --ci, --table, --style or --plots"
            )
        if residuals is not None:
            fail("--pool does not take --residuals yet: fit each imputed data set with it")
        if weights is not None or weight_type is not None or vce != "model":
            fail("--pool does not take --weights, --weight-type or --vce yet")
        limits = _limits(max_params, max_seconds)
        reml = False if ml else None
        run_pool(
            formula, data, reml=reml, force=force, limits=limits, string_col=string_col,
            json_path=json_path, level=level,
        )  # fmt: skip
        return
    if not dask and (scheduler is not None or workers is not None):
        fail("--scheduler and --workers go with --dask")
    from tiers.cli.glmm import fit_glmm_cli, is_glmm

    if is_glmm(formula, family):
        lmm_only = {"--residuals": residuals,
                    "--weights": weights, "--weight-type": weight_type,
                    "--vce": None if vce == "model" else vce, "--ml": ml or None,
                    "--dask": dask or None}  # fmt: skip
        given = [name for name, value in lmm_only.items() if value is not None]
        if given:
            fail(f"{', '.join(given)} are not available for GLMMs (--family); use --json")
        try:
            frame = read_frame(data, string_col)
        except TiersError as exc:
            fail(exc)
        glmm_result = fit_glmm_cli(
            formula,
            frame,
            family=family,
            link=link,
            nagq=nagq,
            trials=trials,
            style=style,
            exponentiate=exponentiate,
            ci=ci,
            level=level,
            json_path=json_path,
            force=force,
            table=TABLE_FORMATS[table] if table is not None else None,
        )
        if plots is not None:
            _write_plots(glmm_result, plots)
        return
    try:
        limits = _limits(max_params, max_seconds)
        structure = None if residuals is None else parse_residuals(residuals, stata=False)
        with deferred_warnings() as caught:
            if dask:
                if structure is not None or weights is not None or vce != "model":
                    fail(
                        "--dask fits from unweighted sufficient statistics with model-based "
                        "standard errors: it takes no --residuals, --weights or --vce"
                    )
                reml = False if ml else None
                result = _fit_dask(
                    formula, data, string_col, scheduler, workers, reml, force, limits
                )
            else:
                frame = read_frame(data, string_col)
                result = fit_model(
                    formula,
                    frame,
                    reml=False if ml else None,
                    force=force,
                    limits=limits,
                    residuals=structure,
                    weights=weights,
                    weight_type=weight_type,
                    vce=vce,
                )
    except (TiersError, ValueError) as exc:
        fail(exc)
    if table is not None:
        from tiers.report.table import table as make_table

        typer.echo(getattr(make_table(result), TABLE_FORMATS[table])(), nl=False)
        show_warnings(caught)  # the table has no warnings section: every one, on stderr
    else:
        try:
            typer.echo(result.summary(style, ddf=ddf_method))  # type: ignore[arg-type]
        except TiersError as exc:
            fail(exc)
        show_warnings(caught, result.warnings)  # those in the summary are not repeated
    kr = None if ddf_method is None else ddf_method == "kenward-roger"
    doc = result.to_dict(kenward_roger=kr) if json_path is not None else {}
    if ci is not None:
        from tiers.inference.bootstrap import BootstrapInterrupted
        from tiers.report.json import confint_dict
        from tiers.report.text import confint_table

        conf = confidence_level(level, result.formula.level)
        try:
            intervals = result.confint(ci, conf, n_boot=n_boot, seed=seed, progress=progress)
            tests_ddf = ddf_method or result.formula.dfmethod or "satterthwaite"
            tests = None if tests_ddf == "normal" else result._tests(conf, tests_ddf)
        except (TiersError, ValueError) as exc:
            fail(exc)
        except BootstrapInterrupted as exc:
            typer.echo(f"interrupted: {exc}; no intervals computed", err=True)
            raise
        typer.echo("")
        typer.echo(confint_table(intervals, tests))
        doc["confint"] = confint_dict(intervals, tests)
    if json_path is not None:
        write_json(doc, json_path)
    if plots is not None:
        _write_plots(result, plots)


def _write_plots(result: Any, folder: Path) -> None:
    """The fit's figures into ``folder``; one line per file, and why a figure is missing."""
    from tiers.report.plots import write_plots

    try:
        paths, notes = write_plots(result, folder, option="--plots")
    except TiersError as exc:
        fail(exc)
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(
        f"wrote {len(paths)} figures to {folder}: {', '.join(p.name for p in paths)}", err=True
    )


def _fit_dask(
    formula: str,
    data: Path,
    string_col: list[str] | None,
    scheduler: str | None,
    workers: int | None,
    reml: bool | None,
    force: bool,
    limits: Any,
) -> LmmResult:
    """``fit --dask``: read the files lazily and fit on a cluster (closed after the fit)."""
    from tiers.api import fit as fit_model
    from tiers.api.reading import read_data
    from tiers.scale.cluster import dask_client

    ddf = read_data(str(data), lazy=True, string_columns=string_col)
    with dask_client(scheduler, workers=workers):
        return fit_model(formula, ddf, reml=reml, force=force, limits=limits)


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
        fail(f"--sizes must be comma-separated integers, got {sizes!r}")
    if not size_list:
        fail(f"--sizes must list at least one positive integer (e.g. 5,50), got {sizes!r}")
    check_output(out, "--out", folder=True)
    try:
        run_exploration(districts=districts, seed=seed, sizes=size_list, out=out)
    except TiersError as exc:
        fail(exc)


def _limits(max_params: int | None, max_seconds: float | None) -> Any:
    """`tiers.Limits` with the options given, the defaults elsewhere (None: all defaults)."""
    if max_params is None and max_seconds is None:
        return None
    import dataclasses

    from tiers.design.diagnostics import LIMITS

    if max_params is not None and max_params < 1:
        fail(f"--max-params must be at least 1, got {max_params}")
    if max_seconds is not None and not max_seconds > 0:
        fail(f"--max-seconds must be positive, got {max_seconds}")
    return dataclasses.replace(
        LIMITS,
        max_theta=LIMITS.max_theta if max_params is None else max_params,
        max_seconds=LIMITS.max_seconds if max_seconds is None else max_seconds,
    )


lrtest_cli.register(app)
predict.register(app)
xtreg_cli.register(app)
simulate_cli.register(app)
study.register(app)
report_cli.register(app)


def _plain_fit(args: list[str]) -> bool:
    """Run ``tiers fit FORMULA DATA`` (no option) directly; False for any other command line.

    With two arguments and no option there is nothing to parse, and typer's parsing costs a
    fresh process about 0.1 s (it builds a pydantic validator for each of the command's 37
    parameters, importing pydantic): a third of a whole ``tiers fit`` at 80,000 rows. The
    command is the same function with the defaults typer would pass.
    """
    if len(args) != 3 or args[0] != "fit" or any(a.startswith("-") for a in args[1:]):
        return False
    tidy_warnings()  # as the root callback
    try:
        fit(args[1], Path(args[2]))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    return True


def main() -> None:
    """Console-script entry point."""
    # The interpreter's last garbage collections walk every object still alive at exit, ~90,000
    # from numpy, pandas, scipy and tiers: 0.1 s of a 0.7 s `tiers fit`. Frozen objects are left
    # out of them; module teardown still frees what nothing else refers to (finalizers of objects
    # alive at exit are not guaranteed anyway: the data model's ``object.__del__``).
    atexit.register(gc.freeze)
    try:
        if not _plain_fit(sys.argv[1:]):
            app(prog_name="tiers")  # also under python -m tiers, for help and shell completion
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
