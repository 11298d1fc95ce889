"""``tiers fit FORMULA 'imp_*.csv' --pool``: one fit per imputed data set, combined by Rubin's rules."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import typer

from tiers.cli.common import confidence_level, deferred_warnings, fail, read_frame, write_json
from tiers.errors import TiersError


def data_files(pattern: Path) -> list[Path]:
    """The files a DATA pattern matches, in natural order (``imp_2`` before ``imp_10``).

    Exits with a message when fewer than two match.
    """
    import re

    text = str(pattern)
    files = sorted(
        (Path(p) for p in glob.glob(text) if Path(p).is_file()),
        key=lambda p: [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", str(p))],
    )
    if len(files) < 2:
        fail(
            f"--pool needs DATA to match two or more imputed data sets (quote the pattern, e.g. "
            f"'imp_*.csv'); {text!r} matches {len(files)}"
        )
    return files


def run_pool(
    formula: str,
    pattern: Path,
    *,
    reml: bool | None,
    force: bool,
    limits: Any,
    string_col: list[str] | None,
    json_path: Path | None,
    level: float | None = None,
) -> None:
    """Fit ``formula`` to each file ``pattern`` matches, pool the fits and print the summary.

    ``level`` is ``--level`` as given (default: a Stata formula's ``level(#)``, else 0.95).
    """
    from tiers.api import fit as fit_model
    from tiers.inference.pool import pool

    files = data_files(pattern)
    fits = []
    held: list[str] = []
    try:
        for path in files:
            with deferred_warnings() as caught:
                frame = read_frame(path, string_col)
                fits.append(fit_model(formula, frame, reml=reml, force=force, limits=limits))
            # the pooled summary has no warnings section: each fit's, named by its file
            held += list(dict.fromkeys(f"{path.name}: {w.message}" for w in caught))
        pooled = pool(fits, level=confidence_level(level, fits[0].formula.level))
    except TiersError as exc:
        if len(fits) < len(files):
            fail(f"{files[len(fits)]}: {exc}")
        order = ", ".join(f"fit {i + 1} = {p.name}" for i, p in enumerate(files))
        fail(f"{exc} ({order})")
    typer.echo(pooled.summary())
    typer.echo(f"Data sets: {', '.join(p.name for p in files)}")
    for text in held:
        typer.echo(f"Warning: {text}", err=True)
    if json_path is not None:
        doc = pooled.to_dict() | {"files": [str(p) for p in files]}
        write_json(doc, json_path)
