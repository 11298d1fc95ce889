"""``tiers ranef`` and ``tiers predict``: a fitted model's random effects and predictions as CSV.

Both fit the model as ``tiers fit`` does (same formula syntaxes, ``--ml``, ``--force``,
``--string-col``) and write one table with `tiers.write_data` (CSV, or Parquet by the extension).
The statistics are the result's `ranef` and `predict`; this module only reshapes and writes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
    fail,
    read_frame,
)
from tiers.errors import TiersError

RANEF_COLUMNS = ("group", "level", "effect", "mode", "sd")
RE_CHOICES = ("include", "exclude")
NEW_LEVEL_CHOICES = ("population", "error")
NA_CHOICES = ("omit", "exclude")

OutputOption = Annotated[
    Path, typer.Option("-o", "--output", help="CSV (or Parquet) file to write")
]


def _fit(formula: str, data: Path, ml: bool, force: bool, string_col: list[str] | None) -> Any:
    from tiers.api import fit as fit_model

    try:
        frame = read_frame(data, string_col)
        return frame, fit_model(formula, frame, reml=False if ml else None, force=force)
    except TiersError as exc:
        fail(exc)


def _write(table: Any, output: Path) -> None:
    from tiers.data.io import write_data

    try:
        write_data(table, output)
    except TiersError as exc:
        fail(exc)


def ranef_table(frames: dict[str, Any]) -> Any:
    """`LmmResult.ranef` frames in long form: ``group, level, effect, mode, sd``.

    Rows by grouping factor, then effect, then level (lme4's ``as.data.frame(ranef(fit))``);
    ``sd`` is the conditional SD, NaN where the frames have none.
    """
    import numpy as np
    import pandas as pd

    parts = []
    for group, df in frames.items():
        for effect in [c for c in df.columns if not str(c).endswith("_sd")]:
            sd = df[f"{effect}_sd"] if f"{effect}_sd" in df.columns else np.nan
            parts.append(
                pd.DataFrame(
                    {
                        "group": group,
                        "level": df.index.astype(str),
                        "effect": effect,
                        "mode": df[effect].to_numpy(float),
                        "sd": np.broadcast_to(np.asarray(sd, float), len(df)),
                    }
                )
            )
    if not parts:
        return pd.DataFrame(columns=list(RANEF_COLUMNS))
    return pd.concat(parts, ignore_index=True)[list(RANEF_COLUMNS)]


def ranef(
    formula: FormulaArg,
    data: DataArg,
    output: OutputOption,
    ml: MlOption = False,
    force: ForceOption = False,
    string_col: StringColOption = None,
) -> None:
    """Write the conditional modes (BLUPs) and conditional SDs of every random effect.

    One row per grouping factor, effect and level: group, level, effect, mode, sd (lme4's
    as.data.frame(ranef(fit, condVar = TRUE)): condval, condsd).
    """
    check_output(output, "-o/--output")
    _, result = _fit(formula, data, ml, force, string_col)
    try:
        frames = result.ranef(cond_var=True)
    except ValueError as exc:  # a large crossed design whose engine gives no conditional SDs
        typer.echo(f"note: no conditional SDs ({exc}); the sd column is empty", err=True)
        frames = result.ranef(cond_var=False)
    table = ranef_table(frames)
    _write(table, output)
    groups = ", ".join(f"{g} ({len(f):,} levels)" for g, f in frames.items())
    typer.echo(f"wrote {len(table):,} random effects of {groups} to {output}")


def predict(
    formula: FormulaArg,
    data: DataArg,
    output: OutputOption,
    newdata: Annotated[
        Path | None,
        typer.Option(help="predict for the rows of this file instead of the fitted data"),
    ] = None,
    interval: Annotated[
        bool,
        typer.Option(
            "--interval",
            help="add lower and upper bounds of a prediction interval for a new observation",
            show_default=False,
        ),
    ] = False,
    level: LevelOption = None,
    re: Annotated[
        str,
        typer.Option(
            "--re",
            metavar="include|exclude",
            help="add the groups' conditional modes, or predict at the population mean",
        ),
    ] = "include",
    new_levels: Annotated[
        str,
        typer.Option(
            metavar="population|error",
            help="a group of --newdata not in the fit: population (its effect is 0) or error",
        ),
    ] = "population",
    na_action: Annotated[
        str,
        typer.Option(
            metavar="omit|exclude",
            help="rows with missing values: left out (omit), or kept with empty predictions "
            "(exclude, lme4's na.exclude: one line per row of the file)",
        ),
    ] = "omit",
    ml: MlOption = False,
    force: ForceOption = False,
    string_col: StringColOption = None,
) -> None:
    """Write predictions (mean, and with --interval lower and upper) for each row.

    The first column, row, is the row's index in the data (or --newdata) file: its pandas index,
    0 for the first data row. Rows with missing values have no prediction: left out, or with
    --na-action exclude written with empty values.
    """
    if re not in RE_CHOICES:
        fail(f"--re must be one of {', '.join(RE_CHOICES)}; got {re!r}")
    if new_levels not in NEW_LEVEL_CHOICES:
        fail(f"--new-levels must be one of {', '.join(NEW_LEVEL_CHOICES)}; got {new_levels!r}")
    if na_action not in NA_CHOICES:
        fail(f"--na-action must be one of {', '.join(NA_CHOICES)}; got {na_action!r}")
    if level is not None:
        confidence_level(level)  # refuse a bad --level before fitting
    check_output(output, "-o/--output")
    frame, result = _fit(formula, data, ml, force, string_col)
    source = frame
    try:
        if newdata is not None:
            source = read_frame(newdata, string_col)
        conf = confidence_level(level, result.formula.level)
        pred = result.predict(
            None if newdata is None else source,
            re=re,
            new_levels=new_levels,
            interval=interval,
            level=conf,
            na_action=na_action,
        )
    except (TiersError, ValueError) as exc:
        fail(exc)
    table = pred.rename_axis(pred.index.name or "row").reset_index()
    _write(table, output)
    missing = len(source) - int(table["mean"].notna().sum())
    note = ""
    if missing > 0:
        note = f" ({missing:,} rows with missing values have " + (
            "none)" if na_action == "omit" else "empty ones)"
        )
    typer.echo(f"wrote {len(table):,} predictions to {output}{note}")


def register(app: typer.Typer) -> None:
    """Add the ``ranef`` and ``predict`` commands to the main app."""
    app.command("ranef")(ranef)
    app.command("predict")(predict)
