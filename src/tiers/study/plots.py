"""Figures of a simulation study (matplotlib, Agg; imported only when plotting).

Three figures, each written as PNG or SVG:

* ``sd_distributions``: for each estimator (rows) and SD parameter it estimates (columns), the
  distribution of the estimates at each size as a box plot, with the true SD as a dashed line
  where the estimator targets it (it models every level): convergence shows
  as boxes closing on the line, bias as boxes settling elsewhere, non-identification as boxes that
  stay wide however large the sample;
* ``coverage``: coverage of the reported 95% intervals against size, per parameter, with the
  nominal 0.95 and a band of +-2 Monte Carlo SEs, ``2 sqrt(0.95 x 0.05 / R)`` (Morris et al. 2019,
  Table 6), within which an honest interval's coverage falls;
* ``rmse``: RMSE against size on log-log axes, per parameter; a consistent estimator falls with
  slope about -1/2 in the number of top-level units, an inconsistent one flattens out.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from tiers.study.runner import StudyResult

__all__ = ["plot_study", "plot_sd_distributions", "plot_coverage", "plot_rmse"]

Format = Literal["png", "svg"]


def _figure(nrows: int, ncols: int, width: float, height: float) -> tuple[Figure, np.ndarray]:
    # Figure + the Agg canvas directly, not pyplot: no global state, no GUI backend, safe to call
    # from any thread or process and with whatever backend the user's session has selected.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _sd_params(result: StudyResult) -> list[str]:
    present = set(result.summary["parameter"])
    return [p for p in result.design.true_parameters() if p.startswith("sd_") and p in present]


def _params(result: StudyResult) -> list[str]:
    present = list(dict.fromkeys(result.summary["parameter"]))
    order = list(result.design.true_parameters())
    return [p for p in order if p in present] + [p for p in present if p not in order]


def _label(result: StudyResult) -> str:
    return (
        f"{result.level} units (per parent)"
        if result.level != result.design.levels[0].name
        else f"{result.level} (units)"
    )


def _targets(reps: pd.DataFrame, estimator: str, params: list[str], param: str) -> bool:
    """Whether ``estimator`` estimates ``param`` as the design defines it.

    An estimator that leaves out a level (the one-level model, a panel estimator) estimates its SDs
    under another meaning: the omitted levels' variance is absorbed into the ones it has, so the
    design's true value is not what its estimates converge to and no truth line is drawn. The
    residual SD is targeted by any estimator that models the innermost level.
    """
    have = set(reps.loc[reps["estimator"] == estimator, "parameter"])
    if param == "sd_residual":  # any model of the innermost level separates the residual from it
        inner = [p for p in params if p != "sd_residual"][-1:]
        return all(p in have for p in inner)
    return all(p in have for p in params)


def plot_sd_distributions(result: StudyResult, path: Path) -> Path:
    """Write `sd_figure` to ``path``."""
    fig = sd_figure(result)
    fig.savefig(path, dpi=110)
    return path


def sd_figure(result: StudyResult) -> Figure:
    """Box plots of each SD estimate per size, one row per estimator, truth dashed where targeted.

    Only the parameters an estimator estimates get a panel; the dashed true value is drawn only
    for estimators that estimate every SD of the design (see `_targets`).
    """
    params = _sd_params(result)
    truth = result.design.true_parameters()
    reps = result.replicates[result.replicates["status"] == "ok"]
    rows = []
    for est in result.estimators:
        sub = reps[reps["estimator"] == est.name]
        have = [p for p in params if sub.loc[sub["parameter"] == p, "estimate"].notna().any()]
        if have:
            rows.append((est, have))
    ncols = max((len(h) for _, h in rows), default=1)
    fig, axes = _figure(max(len(rows), 1), ncols, 2.9, 2.3)
    for spare in axes.flat:
        spare.set_axis_off()
    sizes = list(result.sizes)
    for i, (est, have) in enumerate(rows):
        for j, param in enumerate(have):
            ax: Axes = axes[i, j]
            ax.set_axis_on()
            sub = reps[(reps["estimator"] == est.name) & (reps["parameter"] == param)]
            data = [sub.loc[sub["size"] == s, "estimate"].dropna().to_numpy() for s in sizes]
            ax.boxplot(data, tick_labels=[str(s) for s in sizes], showfliers=True,
                       flierprops={"markersize": 2, "alpha": 0.4})  # fmt: skip
            if _targets(reps, est.name, params, param):
                ax.axhline(truth[param], color="C3", ls="--", lw=1.2,
                           label=f"truth {truth[param]:g}")  # fmt: skip
                ax.legend(fontsize=7, loc="best")
            else:
                ax.text(0.98, 0.98, "omits a level: estimates\nanother quantity (no truth line)",
                        ha="right", va="top", fontsize=6.5, color="0.4",
                        transform=ax.transAxes)  # fmt: skip
            ax.set_title(f"{est.name}: {param}", fontsize=9)
            ax.tick_params(labelsize=8)
            ax.set_xlabel(_label(result), fontsize=8)
            if j == 0:
                ax.set_ylabel("estimate", fontsize=8)
    fig.suptitle(f"SD estimates over {result.n_replicates} replicates per size", fontsize=11)
    return fig


#: Markers and line styles per estimator: lines that coincide stay distinguishable.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_DASHES = ("-", "--", "-.", ":")


def log_ticks(lo: float, hi: float) -> list[float]:
    """Readable tick values for a log axis over ``[lo, hi]``: 1-2-5 steps, finer for short ranges.

    A range shorter than a decade gets no decade ticks from matplotlib's default locator (or one);
    here it gets at least three ticks with at most two significant digits.
    """
    if not (lo > 0 and hi >= lo and math.isfinite(hi)):
        return []
    k0, k1 = math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1
    fine = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)
    for mantissas in ((1.0,), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0), fine):
        ticks = [m * 10.0**k for k in range(k0, k1 + 1) for m in mantissas]
        ticks = [float(f"{t:.2g}") for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
        if len(ticks) >= 3:
            return ticks
    return sorted({float(f"{t:.2g}") for t in np.geomspace(lo, hi, 4)})


def _lines(
    result: StudyResult, column: str, path: Path, *, log: bool, nominal: float | None
) -> Path:
    fig = lines_figure(result, column, log=log, nominal=nominal)
    fig.savefig(path, dpi=110)
    return path


def lines_figure(result: StudyResult, column: str, *, log: bool, nominal: float | None) -> Figure:
    """``column`` of the summary against size, one panel per parameter, one line per estimator."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    s = result.summary
    params = [p for p in _params(result) if s.loc[s["parameter"] == p, column].notna().any()]
    ncols = min(4, max(len(params), 1))
    nrows = max(1, math.ceil(len(params) / ncols))
    fig, axes = _figure(nrows, ncols, 3.1, 2.5)
    # One colour per estimator in every panel, and one legend for the figure.
    colours = {e.name: f"C{i % 10}" for i, e in enumerate(result.estimators)}
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    handles: dict[str, Artist] = {}
    # coinciding lines (two estimators with the same coverage) are told apart by marker and dash,
    # and by a small sideways offset on the log size axis
    n_est = max(len(result.estimators), 1)
    offset = {e.name: 1.0 + 0.025 * (i - (n_est - 1) / 2) for i, e in enumerate(result.estimators)}
    for k, param in enumerate(params):
        ax: Axes = axes.flat[k]
        for i, e in enumerate(result.estimators):
            sub = s[(s["estimator"] == e.name) & (s["parameter"] == param)].sort_values("size")
            if sub[column].notna().any():
                (line,) = ax.plot(sub["size"] * offset[e.name], sub[column],
                                  marker=_MARKERS[i % len(_MARKERS)], ms=4, mfc="none",
                                  ls=_DASHES[i % len(_DASHES)], color=colours[e.name])  # fmt: skip
                handles[e.name] = line
        if nominal is not None:
            band = 2.0 * math.sqrt(nominal * (1 - nominal) / max(result.n_replicates, 1))
            handles[f"nominal {nominal:g} (band: 2 MC SE)"] = ax.axhline(
                nominal, color="k", ls="--", lw=1
            )
            ax.axhspan(nominal - band, min(nominal + band, 1.0), color="0.88", zorder=0)
            ax.set_ylim(-0.02, 1.02)
        ax.set_xscale("log")
        ax.set_xticks(list(result.sizes), [str(v) for v in result.sizes])
        ax.xaxis.set_minor_formatter(NullFormatter())
        if log:
            ax.set_yscale("log")
            vals = s.loc[s["parameter"] == param, column].to_numpy(dtype=float)
            vals = vals[np.isfinite(vals) & (vals > 0)]
            ticks = log_ticks(float(vals.min()), float(vals.max())) if vals.size else []
            if ticks:
                ax.yaxis.set_major_locator(FixedLocator(ticks))
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(param, fontsize=9)
        ax.set_xlabel(_label(result), fontsize=8)
        ax.tick_params(labelsize=8)
        if k % ncols == 0:
            ax.set_ylabel(column + (" (log scale)" if log else ""), fontsize=8)
    for ax in list(axes.flat)[len(params) :]:
        ax.set_axis_off()
    order = [e.name for e in result.estimators if e.name in handles]
    labels = order + [h for h in handles if h not in order]
    fig.legend([handles[h] for h in labels], labels, loc="outside upper center",
               ncols=min(len(handles), 5), fontsize=8, frameon=False)  # fmt: skip
    return fig


def plot_coverage(result: StudyResult, path: Path) -> Path:
    """Coverage of the reported 95% intervals against size, nominal line and MC band."""
    return _lines(result, "coverage", path, log=False, nominal=0.95)


def plot_rmse(result: StudyResult, path: Path) -> Path:
    """RMSE against size, log-log."""
    return _lines(result, "rmse", path, log=True, nominal=None)


def plot_study(result: StudyResult, out: str | Path, *, fmt: Format = "png") -> list[Path]:
    """Write ``sd_distributions``, ``coverage`` and ``rmse`` (``.png`` or ``.svg``) into ``out``."""
    if fmt not in ("png", "svg"):
        raise ValueError(f"fmt must be png or svg, got {fmt!r}")
    if isinstance(result.summary, pd.DataFrame) and result.summary.empty:
        raise ValueError("the study has no results to plot")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    return [
        plot_sd_distributions(result, folder / f"sd_distributions.{fmt}"),
        plot_coverage(result, folder / f"coverage.{fmt}"),
        plot_rmse(result, folder / f"rmse.{fmt}"),
    ]
