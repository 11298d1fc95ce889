"""The command line's Dask options (``--dask``, ``--scheduler``, ``--workers``), shared by commands."""

from __future__ import annotations

from typing import Annotated

import typer

DaskOption = Annotated[
    bool,
    typer.Option(
        "--dask",
        help="DATA is Parquet or CSV files (a folder or a quoted glob such as 'data/*.parquet'), "
        "reduced on a Dask cluster without loading them",
        show_default=False,
    ),
]
SchedulerOption = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        metavar="ADDRESS",
        help="with --dask: a running Dask scheduler (tcp://HOST:PORT); default a local cluster "
        "for the run",
    ),
]
WorkersOption = Annotated[
    int | None,
    typer.Option("--workers", help="with --dask: worker processes of the local cluster"),
]
