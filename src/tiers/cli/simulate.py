"""``tiers simulate``: draw a design's data to a file, or a partitioned folder of files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from tiers.cli.common import check_output, check_seed, fail
from tiers.errors import TiersError


def simulate(
    output: Annotated[Path, typer.Option("-o", "--output", help="CSV or Parquet file to write")],
    preset: Annotated[
        str, typer.Option(help="a built-in design: seed, or seed-binary (pass/fail, logit scale)")
    ] = "seed",
    design: Annotated[
        Path | None, typer.Option(help="a TOML/JSON design file instead of a preset")
    ] = None,
    districts: Annotated[int | None, typer.Option(help="top-level units (seed preset)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    restart_ids: Annotated[
        bool,
        typer.Option("--restart-ids", help="ids restart within each parent", show_default=False),
    ] = False,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            metavar="parquet|csv",
            help="write a partitioned dataset: -o is a folder, filled chunk by chunk in bounded "
            "memory (one random stream per top-level unit, so any size is reproducible)",
        ),
    ] = None,
    rows_per_file: Annotated[
        int, typer.Option("--rows-per-file", help="with --format: about this many rows a file")
    ] = 1_000_000,
    family: Annotated[
        str | None,
        typer.Option(
            metavar="binomial|poisson",
            help="a GLMM outcome (0/1 or counts) with the design's SDs on the link scale",
        ),
    ] = None,
    link: Annotated[
        str | None, typer.Option(help="logit, probit or cloglog (binomial); log (poisson)")
    ] = None,
    exposure: Annotated[
        str | None,
        typer.Option(
            metavar="COLUMN",
            help="poisson: an exposure column, uniform on [0.5, 2]; counts have mean "
            "exposure * exp(eta) (fit with offset(log(COLUMN)))",
        ),
    ] = None,
) -> None:
    """Simulate a nested design and write it to a file (or, with --format, a folder of files)."""
    from tiers.cli.study import glmm_design
    from tiers.data.io import write_data
    from tiers.simulation.data import simulate as run_simulation

    check_seed(seed)
    if fmt is None:
        check_output(output, "-o/--output")
    try:
        spec = glmm_design(preset, design, districts, family, link, exposure)
        start = time.perf_counter()
        if fmt is not None:
            _simulate_partitioned(spec, output, seed, fmt, rows_per_file, restart_ids, start)
            return
        frame = run_simulation(spec, seed, restart_ids=restart_ids)
        write_data(frame, output)
    except TiersError as exc:
        fail(exc)
    typer.echo(
        f"wrote {len(frame):,} rows x {frame.shape[1]} columns to {output} "
        f"({time.perf_counter() - start:.1f} s)"
    )


def _simulate_partitioned(
    spec: Any,
    folder: Path,
    seed: int | None,
    fmt: str,
    rows_per_file: int,
    restart_ids: bool,
    start: float,
) -> None:
    """``simulate --format``: a folder of part files, written chunk by chunk."""
    from tiers.simulation.partitioned import FORMATS, write_partitioned

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    files = write_partitioned(
        spec,
        folder,
        seed,
        fmt=fmt,
        rows_per_file=rows_per_file,
        restart_ids=restart_ids,
    )
    typer.echo(
        f"wrote {spec.nrows:,} rows in {len(files):,} {fmt} files to {folder}/ "
        f"({time.perf_counter() - start:.1f} s)"
    )


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command to the main app."""
    app.command("simulate")(simulate)
