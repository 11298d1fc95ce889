"""``tiers study`` and ``tiers plan``: simulation studies and design planning on the command line.

Added to the main app by :func:`register`; like the rest of the CLI these parse options and print,
and the statistics live in :mod:`tiers.study` and :mod:`tiers.plan`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from tiers.cli.common import check_output, fail, write_json
from tiers.errors import DesignError, OutputError, TiersError


def read_design(path: Path) -> Any:
    """``--design FILE`` read; a missing or unreadable file is a `DesignError` naming the option."""
    from tiers.simulation.presets import load_design

    try:
        return load_design(path)
    except OSError as exc:
        raise DesignError(
            f"--design {path}: cannot read the file ({exc.strerror or exc})"
        ) from None


def _design(preset: str, design: Path | None, districts: int | None) -> Any:
    """The design from ``--design FILE`` or ``--preset``; ``--districts`` sets the top level."""
    from tiers.simulation.presets import PRESETS

    if design is not None:
        spec = read_design(design)
        return spec if districts is None else spec.with_units(spec.levels[0].name, districts)
    if preset not in PRESETS:
        raise DesignError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
    return PRESETS[preset](**({} if districts is None else {"districts": districts}))


def glmm_design(
    preset: str,
    design: Path | None,
    districts: int | None,
    family: str | None,
    link: str | None,
    exposure: str | None = None,
) -> Any:
    """`_design` with ``--family``, ``--link`` (and ``--exposure``) applied.

    The seed-binary preset takes its link itself (its SDs are rescaled to the link's latent
    scale); any other design keeps its SDs and coefficients, read on the new link scale, and a
    design with a residual SD is refused (`NestedDesign.with_family`).
    """
    from dataclasses import replace

    if exposure is not None and (family or "") != "poisson":
        raise DesignError("--exposure goes with --family poisson (counts per unit of exposure)")
    if (
        preset == "seed-binary"
        and design is None
        and link is not None
        and family in (None, "binomial")
    ):
        from tiers.simulation.presets import seed_binary_design

        return seed_binary_design(
            **({} if districts is None else {"districts": districts}), link=link
        )
    spec = _design(preset, design, districts)
    if family is None and link is None:
        return spec
    if family is None and not spec.is_glmm:
        raise DesignError(f"--link {link} needs --family binomial or poisson (a GLMM outcome)")
    spec = spec.with_family(family or spec.family, link)
    return spec if exposure is None else replace(spec, exposure=exposure)


def _table(df: Any, title: str, digits: int = 4) -> Any:
    import pandas as pd
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    for col in df.columns:
        numeric = pd.api.types.is_numeric_dtype(df[col])
        table.add_column(str(col), justify="right" if numeric else "left")
    for _, row in df.iterrows():
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append("." if math.isnan(v) else f"{v:,.{digits}f}")
            else:
                cells.append(str(v))
        table.add_row(*cells)
    return table


# ``--level`` is the confidence level in ``tiers fit``; here the hierarchy level is --unit-level.
# The old spelling is refused in words rather than with click's "no such option".
_OldLevel = Annotated[str | None, typer.Option("--level", hidden=True)]


def _refuse_old_level(value: str | None) -> None:
    if value is not None:
        fail(
            f"--level is now --unit-level here (use --unit-level {value}); --level is the "
            "confidence level in tiers fit"
        )


def _plot(result: Any, folder: Path, fmt: str) -> list[Path]:
    """The study's figures in ``folder``, each renamed into place whole (`StudyResult.plot`)."""
    try:
        return list(result.plot(folder, fmt=fmt))
    except OutputError as exc:
        raise OutputError(f"--plots: {exc}") from exc


def _units(u: int, level: str, spec: Any) -> str:
    top = level == spec.levels[0].name
    return f"{u:,} {level} units" + ("" if top else " per parent unit")


def study(
    out: Annotated[Path, typer.Option(help="folder for summary.csv, replicates.csv (resumable)")],
    preset: Annotated[str, typer.Option(help="a built-in design")] = "seed",
    design: Annotated[
        Path | None, typer.Option(help="a TOML/JSON design file instead of a preset")
    ] = None,
    sizes: Annotated[
        str, typer.Option(help="units of --unit-level, comma-separated")
    ] = "5,10,20,50",
    unit_level: Annotated[
        str | None,
        typer.Option(
            "--unit-level", help="the hierarchy level whose units vary (default: outermost)"
        ),
    ] = None,
    old_level: _OldLevel = None,
    replicates: Annotated[int, typer.Option(help="data sets per size")] = 100,
    seed: Annotated[int, typer.Option(help="random seed")] = 1,
    estimator: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME=SPEC",
            help="NAME=SPEC, repeatable; SPEC is ols, fe, re (fe:ID for another panel id) or a "
            "mixed-model formula, optionally followed by '; nagq=7', '; family=binomial', "
            "'; link=probit' (a GLMM; a GLMM design's formulas are GLMMs of its family unless "
            "'; family=gaussian'). Default: fe, re, the one-level and the nested model (a GLMM "
            "design: the two mixed models, Laplace)",
        ),
    ] = None,
    family: Annotated[
        str | None,
        typer.Option(
            metavar="binomial|poisson",
            help="simulate a GLMM outcome (SDs on the link "
            "scale; a design with a residual SD is refused)",
        ),
    ] = None,
    link: Annotated[
        str | None, typer.Option(help="GLMM link (logit, probit, cloglog; log)")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="processes (default: all cores)")] = None,
    max_rows: Annotated[int, typer.Option(help="refuse larger replicates")] = 20_000_000,
    plots: Annotated[Path | None, typer.Option(help="also write the figures here")] = None,
    plot_format: Annotated[str, typer.Option(help="png or svg")] = "png",
    report: Annotated[
        Path | None,
        typer.Option(
            "--report", metavar="FILE", help="also write a self-contained HTML report here"
        ),
    ] = None,
    parquet: Annotated[
        bool,
        typer.Option(
            "--parquet", help="also write summary and replicates as Parquet", show_default=False
        ),
    ] = False,
    progress: Annotated[
        bool,
        typer.Option(
            help="progress on stderr: a bar naming the current size in a terminal, a plain line "
            "every 10 s or 10% in a log"
        ),
    ] = True,
) -> None:
    """Simulation study: bias, SD, RMSE, SE and coverage of each estimator at each size."""
    from tiers.study.runner import SUMMARY_COLUMNS, run_study

    _refuse_old_level(old_level)
    if plot_format not in ("png", "svg"):
        fail(f"--plot-format must be png or svg, got {plot_format!r}")
    try:
        size_list = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        fail(f"--sizes must be comma-separated integers, got {sizes!r}")
    if not size_list:
        fail(f"--sizes must list at least one positive integer (e.g. 5,50), got {sizes!r}")
    if seed < 0:
        fail(f"--seed must be an integer >= 0, got {seed}")
    check_output(out, "--out", folder=True)
    check_output(plots, "--plots", folder=True)
    check_output(report, "--report")
    if plots is not None or report is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            opt = "--plots" if plots is not None else "--report"
            fail(f"{opt} needs matplotlib, which is not installed (pip install matplotlib); "
                 f"run without {opt}, or install it first")  # fmt: skip
    try:
        spec = glmm_design(preset, design, None, family, link)
        result = run_study(
            spec, estimator or None, size_list, replicates, seed, level=unit_level, workers=workers,
            out=out, max_rows=max_rows, progress=progress,
        )  # fmt: skip
        paths = _plot(result, plots, plot_format) if plots is not None else []
        if report is not None:
            from tiers.study.report import write_study_report

            paths.append(write_study_report(result, report, "--report"))
    except TiersError as exc:
        fail(exc)
    except KeyboardInterrupt:
        typer.echo(f"finished replicates are kept in {out}; rerun to resume", err=True)
        raise
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    if parquet:
        from tiers.data.io import write_data

        try:
            write_data(result.summary, out / "summary.parquet")
            write_data(result.replicates, out / "replicates.parquet")
        except TiersError as exc:
            fail(exc)
    # Plain text, not a rich table: it stays readable when piped to a file or a narrow terminal.
    shown = [c for c in SUMMARY_COLUMNS if c != "n_interval"]
    typer.echo(result.summary[shown].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    typer.echo(
        f"{result.n_new:,} fits run, {len(result.replicates):,} rows in {out / 'replicates.csv'}; "
        f"summary in {out / 'summary.csv'} ({result.seconds:.1f} s)"
    )
    for p in paths:
        typer.echo(f"wrote {p}")


def plan(
    preset: Annotated[str, typer.Option(help="a built-in design")] = "seed",
    design: Annotated[
        Path | None, typer.Option(help="a TOML/JSON design file instead of a preset")
    ] = None,
    districts: Annotated[int | None, typer.Option(help="top-level units")] = None,
    unit_level: Annotated[
        str | None,
        typer.Option(
            "--unit-level", help="the hierarchy level whose units the searches vary (default: top)"
        ),
    ] = None,
    old_level: _OldLevel = None,
    target_se: Annotated[
        list[str] | None,
        typer.Option(metavar="PARAM=VALUE", help="repeatable: units needed for this SE"),
    ] = None,
    power: Annotated[
        float | None, typer.Option(help="units needed for this power on each covariate")
    ] = None,
    alpha: Annotated[float, typer.Option(help="level of the test for --power")] = 0.05,
    ml: Annotated[
        bool, typer.Option("--ml", help="ML information instead of REML", show_default=False)
    ] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="also write JSON here")] = None,
    family: Annotated[
        str | None,
        typer.Option(metavar="binomial|poisson", help="a GLMM outcome: planned by simulation"),
    ] = None,
    link: Annotated[
        str | None, typer.Option(help="GLMM link (logit, probit, cloglog; log)")
    ] = None,
    nagq: Annotated[
        int | None,
        typer.Option(help="GLMM: adaptive quadrature points per level for the fits (1: Laplace)"),
    ] = None,
    replicates: Annotated[
        int | None, typer.Option(help="GLMM: simulated data sets per size (default 100)")
    ] = None,
    sizes: Annotated[
        str | None, typer.Option(help="GLMM: units of --unit-level to simulate, comma-separated")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="GLMM: random seed (default 1)")] = None,
    workers: Annotated[
        int | None, typer.Option(help="GLMM: processes (default: all cores)")
    ] = None,
) -> None:
    """Expected SEs and power of a balanced nested design (a GLMM outcome: by simulation)."""
    from rich.console import Console

    from tiers.study.plan import plan_design

    _refuse_old_level(old_level)
    check_output(json_path, "--json")
    targets: dict[str, float] = {}
    for item in target_se or []:
        name, sep, value = item.partition("=")
        try:
            targets[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            fail(f"--target-se must be PARAM=VALUE (e.g. sd_dist_id=0.2), not {item!r}")
    try:
        spec = glmm_design(preset, design, districts, family, link)
    except TiersError as exc:
        fail(exc)
    simulation = {"--nagq": nagq, "--replicates": replicates, "--sizes": sizes, "--seed": seed,
                  "--workers": workers}  # fmt: skip
    if spec.is_glmm:
        if ml:
            fail("--ml: a GLMM is always fitted by maximum likelihood; drop --ml")
        opts = {k: v for k, v in simulation.items() if k != "--sizes"}
        _plan_glmm(spec, unit_level, targets, power, alpha, json_path, sizes, opts)
        return
    given = [k for k, v in simulation.items() if v is not None]
    if given:
        fail(f"{', '.join(given)} go with a GLMM design (planned by simulation); this design's "
             "outcome is normal and is planned in closed form")  # fmt: skip
    try:
        result = plan_design(
            spec, reml=not ml, level=unit_level, target_se=targets, power_target=power, alpha=alpha
        )
    except TiersError as exc:
        fail(exc)
    console = Console()
    title = (
        f"Expected SEs ({'ML' if ml else 'REML'} information), {spec.nrows:,} rows, "
        f"{spec.levels[0].units} {spec.levels[0].name}"
    )
    console.print(_table(result.table().reset_index(), title))
    for name, t in result.target_se.items():
        u = t["units"]
        typer.echo(
            f"{name}: SE <= {t['target']:g} needs {_units(u, t['level'], spec)}"
            if u is not None
            else f"{name}: SE <= {t['target']:g} is not reached by varying {t['level']}"
        )
    for name, p in result.power.items():
        line = f"{name}: power {p['power']:.3f} at alpha {p['alpha']:g} for an effect of {p['effect']:g}"
        if "target_power" in p:
            u = p["units"]
            line += (
                f"; power {p['target_power']:g} needs {_units(u, p['level'], spec)}"
                if u is not None
                else f"; power {p['target_power']:g} is not reached"
            )
        typer.echo(line)
    if json_path is not None:
        write_json(result.to_dict(), json_path)


def _plan_glmm(
    spec: Any,
    level: str | None,
    targets: dict[str, float],
    power: float | None,
    alpha: float,
    json_path: Path | None,
    sizes: str | None,
    opts: dict[str, Any],
) -> None:
    """``tiers plan`` for a GLMM design: by simulation, saying which approximation fits it."""
    from tiers.study.plan_sim import plan_by_simulation

    size_list = None
    if sizes is not None:
        try:
            size_list = [int(s) for s in sizes.split(",") if s.strip()]
        except ValueError:
            fail(f"--sizes must be comma-separated integers, got {sizes!r}")
    try:
        result = plan_by_simulation(
            spec, nagq=opts["--nagq"] or 1, replicates=opts["--replicates"] or 100,
            seed=1 if opts["--seed"] is None else opts["--seed"], level=level, sizes=size_list,
            power_target=power, target_se=targets, alpha=alpha, workers=opts["--workers"],
            progress=True,
        )  # fmt: skip
    except TiersError as exc:
        fail(exc)
    typer.echo(
        f"GLMM ({spec.family}, {spec.link} link): no closed-form expected information, so "
        f"planned by simulation: {result.replicates} data sets per size, each fitted by "
        f"the {result.approximation.split(', ', 1)[1]}; power is the share of Wald z tests rejecting "
        f"at alpha {alpha:g} (Monte Carlo SE in power_mcse)"
    )
    shown = result.table.drop(columns=["n_failed"])
    typer.echo(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for name, t in result.targets.items():
        what = (f"power {t['target_power']:g}" if "target_power" in t
                else f"SE <= {t['target_se']:g}")  # fmt: skip
        u = t["units"]
        typer.echo(
            f"{name}: {what} first reached at {_units(u, t['level'], spec)} of those simulated"
            if u is not None
            else f"{name}: {what} not reached at the sizes simulated "
            f"({', '.join(str(s) for s in sorted(set(result.table['size'])))})"
        )
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    if json_path is not None:
        write_json(result.to_dict(), json_path)


def register(app: typer.Typer) -> None:
    """Add the ``study`` and ``plan`` commands to the main app."""
    app.command("study")(study)
    app.command("plan")(plan)
