"""What the commands share: the error exit, JSON output, reading data and the model options.

The model options (``--ml``, ``--force``, ``--string-col``) are spelled once here so that
``tiers fit``, ``ranef``, ``predict``, ``lrtest`` and ``xtreg`` take them the same way.
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from tiers.errors import TiersError


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Warnings in words on stderr (``Warning: ...``), without Python's file and line."""
    print(f"Warning: {message}", file=sys.stderr if file is None else file)


def tidy_warnings() -> None:
    """Show warnings the way the CLI shows everything else (installed by the root command)."""
    warnings.showwarning = _show_warning


@contextlib.contextmanager
def deferred_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Hold the warnings of a block, to be shown after the summary by `show_warnings`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        yield caught


def show_warnings(caught: Iterable[warnings.WarningMessage], shown: Iterable[str] = ()) -> None:
    """Print held warnings once each, leaving out those the summary already printed."""
    seen = set(shown)
    for w in caught:
        text = str(w.message)
        if text not in seen:
            seen.add(text)
            typer.echo(f"Warning: {text}", err=True)


def fail(exc: Exception | str) -> NoReturn:
    """Print ``error: <message>`` on stderr and exit with code 2 (bad input)."""
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


def check_output(path: Path | None, option: str, *, folder: bool = False) -> None:
    """Refuse (exit 2) an output path that cannot be written, before the work starts.

    A folder given as a file, a path under a file, a read-only folder: see
    `tiers._output.check_output`. Missing folders are created when writing.
    """
    from tiers._output import check_output as check

    if path is None:
        return
    try:
        check(path, option, folder=folder)
    except TiersError as exc:
        fail(exc)


def need_matplotlib(option: str) -> None:
    """Refuse (exit 2) an option that draws figures when matplotlib is missing, before any work."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        fail(f"{option} needs matplotlib, which is not installed (pip install 'tiers[plot]' or "
             f"pip install matplotlib); run without {option}, or install it first")  # fmt: skip


def write_json(doc: dict, path: Path, option: str = "--json") -> None:
    """Write ``doc`` as indented JSON (NaN refused), creating the folder; exit 2 if it fails.

    The file is written whole or not at all (a temporary file renamed into place).
    """
    from tiers._output import write_text

    try:
        write_text(path, json.dumps(doc, indent=2, allow_nan=False) + "\n", option)
    except TiersError as exc:
        fail(exc)


def read_frame(path: Path, string_cols: Sequence[str] | None = None) -> Any:
    """The data file as a DataFrame, the ``--string-col`` columns read as text.

    Raises
    ------
    TiersError
        As `tiers.read_data`: a missing or unreadable file, or a ``--string-col`` it lacks.
    """
    from tiers.data.io import read_data

    if string_cols:
        return read_data(path, string_columns=list(string_cols))
    return read_data(path)


def confidence_level(value: float | None, default: float | None = None) -> float:
    """``--level`` as a fraction: 0.95 as given, a percentage such as Stata's 95 divided by 100.

    Without ``--level`` the ``default`` (e.g. a Stata formula's ``level(90)``), else 0.95.
    """
    if value is None:
        return 0.95 if default is None else default
    if 0.0 < value < 1.0:
        return value
    if 10.0 <= value <= 99.99:
        return value / 100.0
    fail(
        f"--level must be between 0 and 1 (e.g. 0.95) or a percentage from 10 to 99.99 "
        f"(e.g. 95, as Stata's level(95)); got {value:g}"
    )


FormulaArg = Annotated[
    str,
    typer.Argument(
        metavar="FORMULA", help="lme4 ('y ~ x + (1 | g)') or Stata ('y x || g:') syntax"
    ),
]
DataArg = Annotated[Path, typer.Argument(metavar="DATA", help="CSV, Parquet or Stata .dta file")]
MlOption = Annotated[
    bool, typer.Option("--ml", help="maximum likelihood instead of REML", show_default=False)
]
ForceOption = Annotated[
    bool,
    typer.Option("--force", help="fit even if components are not identified", show_default=False),
]
StringColOption = Annotated[
    list[str] | None,
    typer.Option(
        "--string-col",
        metavar="NAME",
        help="read column NAME as text, keeping labels such as 007 (Stata's stringcols(), "
        "R's colClasses); repeatable",
        show_default=False,
    ),
]
LevelOption = Annotated[
    float | None,
    typer.Option(
        "--level",
        help="confidence level: 0.95, or Stata's 95 [default: a Stata formula's level(#), "
        "else 0.95]",
        show_default=False,
    ),
]


def check_seed(seed: int | None) -> None:
    """Refuse (exit 2) a negative ``--seed``, naming the option."""
    if seed is not None and seed < 0:
        fail(f"--seed must be an integer >= 0, got {seed}")
