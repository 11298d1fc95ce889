"""`tiers fit --family ...`: a GLMM fitted, printed and written as JSON from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tiers.cli.common import fail, write_json
from tiers.errors import TiersError

#: Stata's GLMM commands: a formula starting with one is a GLMM without --family.
COMMANDS = ("melogit", "meprobit", "mecloglog", "mepoisson")


def is_glmm(formula: str, family: str | None) -> bool:
    """Whether the command line asks for a GLMM."""
    words = formula.split(None, 1)
    return family is not None or bool(words and words[0].lower() in COMMANDS)


def fit_glmm_cli(
    formula: str,
    frame: Any,
    *,
    family: str | None,
    link: str | None,
    nagq: int | None,
    trials: str | None,
    style: str,
    exponentiate: bool,
    ci: str | None,
    level: float | None,
    json_path: Path | None,
    force: bool,
    table: str | None = None,
) -> Any:
    """Fit, print the summary (and intervals with ``--ci wald|profile``), write ``--json``.

    Returns the `tiers.api.glmm_result.GlmmResult` (for ``--plots``).

    ``table``: the `tiers.report.table.Table` method (``to_latex``, ...) that prints the fit as a
    publication table instead of the summary (``--or`` exponentiates its coefficients).
    """
    from tiers.api.glmm import fit_glmm

    if ci not in (None, "wald", "profile"):
        fail(f"--ci for a GLMM must be wald or profile (bootstrap is not available); got {ci!r}")
    try:
        result = fit_glmm(
            formula, frame, family=family, link=link, nagq=nagq, trials=trials, force=force
        )
        if table is not None:
            from tiers.report.table import table as make_table

            expo = exponentiate or result.fit.exponentiate
            typer.echo(getattr(make_table(result, exponentiate=expo), table)(), nl=False)
        else:
            typer.echo(result.summary(style, exponentiate=exponentiate or None))  # type: ignore[arg-type]
        doc = result.to_dict()
        if ci is not None:
            conf = result.confint(level if level is not None else 0.95, method=ci)  # type: ignore[arg-type]
            typer.echo("")
            typer.echo(conf.to_string())
            from tiers.report.glmm_json import glmm_confint_dict

            lv = level if level is not None else 0.95
            doc["confint"] = glmm_confint_dict(conf, result.fit, ci, lv)
    except TiersError as exc:
        fail(exc)
    if json_path is not None:
        write_json(doc, json_path)
    return result
