"""A ``marginsplot``-style figure of predictive margins or marginal effects (matplotlib, Agg).

Each margin is a point with its confidence interval; numeric values of the variable go on a
numeric axis joined by a line (Stata's ``marginsplot`` after ``margins, at()``), factor levels
and contrasts on a categorical axis. Marginal effects get a reference line at zero.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MARGIN_COLUMNS = ("value", "estimate", "conf_low", "conf_high")


def _numeric(values: pd.Series) -> np.ndarray | None:
    try:
        return np.array([float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        return None


def marginsplot(margins: pd.DataFrame, *, ax: Axes | None = None) -> Figure:
    """Plot what `tiers.LmmResult.margins` returned: estimates with their intervals.

    Parameters
    ----------
    margins : DataFrame
        ``value, estimate, conf_low, conf_high`` and the ``attrs`` margins sets (term, kind,
        level).
    ax : matplotlib Axes, optional
        Draw into it; by default a new figure (not registered with pyplot).

    Returns
    -------
    Figure

    Raises
    ------
    ValueError
        ``margins`` lacks a column a margins table has, or has no rows.
    """
    missing = [c for c in MARGIN_COLUMNS if c not in margins.columns]
    if missing or margins.empty:
        raise ValueError(
            "marginsplot takes the table result.margins(...) returns (columns "
            f"{', '.join(MARGIN_COLUMNS)}); "
            + (f"this one lacks {', '.join(missing)}" if missing else "this one has no rows")
        )
    if ax is None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.0, 4.0), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    else:
        fig = ax.get_figure()  # type: ignore[assignment]
    attrs = margins.attrs
    est = margins["estimate"].to_numpy(dtype=np.float64)
    err = np.vstack(
        [est - margins["conf_low"].to_numpy(float), margins["conf_high"].to_numpy(float) - est]
    )
    x = _numeric(margins["value"])
    if x is None:
        x = np.arange(len(margins), dtype=np.float64)
        ax.set_xticks(x, [str(v) for v in margins["value"]])
        ax.errorbar(x, est, yerr=err, fmt="o", capsize=4)
    else:
        ax.errorbar(x, est, yerr=err, fmt="o-", capsize=4)
    term, kind = attrs.get("term", ""), attrs.get("kind", "predictive")
    level = attrs.get("level", 0.95)
    if kind == "dydx":
        ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_ylabel(f"effect of {term} on the linear prediction")
        ax.set_title(f"Average marginal effects of {term} with {level:.0%} CIs")
    else:
        ax.set_ylabel("linear prediction (fixed part)")
        ax.set_title(f"Predictive margins of {term} with {level:.0%} CIs")
    ax.set_xlabel(str(term))
    return fig
