"""Every figure of a fit by name, and all of them written into a folder (``--plots DIR``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tiers._output import atomic_path, check_output
from tiers.options import check_option
from tiers.report.plots import fit, glmm, ranef
from tiers.results.result import FitResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Kind = Literal[
    "caterpillar", "qq_ranef", "qq_residuals", "residuals_fitted", "shrinkage", "shares", "zeta"
]
#: Every figure, in the order a report shows them.
KINDS: tuple[str, ...] = (
    "caterpillar",
    "shrinkage",
    "qq_ranef",
    "residuals_fitted",
    "qq_residuals",
    "shares",
    "zeta",
)
Format = Literal["png", "svg"]

_DRAW: dict[str, Callable[[FitResult], Figure]] = {
    "caterpillar": ranef.caterpillar,
    "shrinkage": ranef.shrinkage,
    "qq_ranef": ranef.qq_ranef,
    "residuals_fitted": fit.residuals_fitted,
    "qq_residuals": fit.qq_residuals,
    "shares": fit.shares,
    "zeta": fit.zeta,
}


#: A GLMM's figures where they are drawn differently (`tiers.report.plots.glmm`).
_GLMM_DRAW: dict[str, Callable[[glmm.GlmmFitted], Figure]] = {
    "caterpillar": ranef.caterpillar,
    "qq_ranef": ranef.qq_ranef,
    "residuals_fitted": glmm.residuals_eta,
    "shares": glmm.latent_shares,
}

Fitted = FitResult | glmm.GlmmFitted


def available(res: Fitted) -> tuple[list[str], list[str]]:
    """The figures this model has, and a note for each that it has not (and why)."""
    if glmm.is_glmm(res):
        return glmm.glmm_available(res)  # type: ignore[arg-type]
    assert isinstance(res, FitResult)
    kinds = list(KINDS)
    notes = []
    if not res.intercepts_only:
        kinds.remove("shares")
        notes.append(
            "no variance-shares figure: with random slopes the variance at a level depends on the "
            "covariates, so it has no single share"
        )
    if "shares" in kinds and not res.one_residual_variance:
        kinds.remove("shares")
        notes.append(
            "no variance-shares figure: the residual variance differs by stratum, so there is "
            "one decomposition per stratum"
        )
    return kinds, notes


def figure_of(res: Fitted, kind: str) -> Figure:
    """The figure ``kind`` (one of `KINDS`) of ``res`` with its default options.

    Raises
    ------
    ValueError
        An unknown kind, or one a GLMM has no version of (the reason in words).
    """
    check_option(kind, KINDS, "kind")
    if glmm.is_glmm(res):
        if kind in glmm.GLMM_MISSING:
            raise ValueError(glmm.GLMM_MISSING[kind])
        have, notes = glmm.glmm_available(res)  # type: ignore[arg-type]
        if kind not in have:
            raise ValueError(notes[-1])
        return _GLMM_DRAW[kind](res)  # type: ignore[arg-type]
    assert isinstance(res, FitResult)
    return _DRAW[kind](res)


def write_plots(
    res: Fitted,
    folder: str | Path,
    *,
    fmt: Format = "png",
    kinds: tuple[str, ...] | None = None,
    option: str = "folder",
) -> tuple[list[Path], list[str]]:
    """Write each figure as ``<kind>.<fmt>`` into ``folder`` (created if missing).

    Parameters
    ----------
    kinds : tuple of str, optional
        The figures (default: every one the model has; see `available`).
    option : str
        How the user named the folder (``--plots``), for the error messages.

    Returns
    -------
    paths, notes
        The files written, and why a figure was not drawn.
    """
    check_option(fmt, ("png", "svg"), "fmt")
    out = check_output(folder, option, folder=True)
    have, notes = available(res)
    for k in kinds or ():
        check_option(k, KINDS, "kind")
    wanted = [k for k in (kinds or have) if k in have]
    if kinds is not None and "shares" not in kinds:
        notes = []
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in wanted:
        fig = figure_of(res, kind)
        path = out / f"{kind}.{fmt}"
        with atomic_path(path, option) as tmp:
            fig.savefig(tmp, format=fmt, dpi=110)
        paths.append(path)
    return paths, notes
