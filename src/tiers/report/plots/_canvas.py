"""A figure on the Agg canvas, not pyplot's: no global state, no GUI backend, any thread.

This module imports matplotlib; it is imported only when a figure is drawn.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tiers._lazy import stats


class TiersFigure(Figure):
    """A `matplotlib.figure.Figure` that shows itself in a notebook.

    A figure made without pyplot is not displayed by Jupyter unless the inline backend happens to
    be active; ``_repr_png_`` makes ``res.plot()`` show the picture as the cell's output.
    """

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", dpi=100)
        return buf.getvalue()


#: Points drawn at most in a scatter or QQ plot; beyond it an even subset in rank (extremes kept).
MAX_POINTS = 5000


def figure(
    npanels: int, *, ncols: int = 3, width: float = 3.4, height: float = 3.0
) -> tuple[Figure, list]:
    """A constrained-layout figure with ``npanels`` axes in rows of ``ncols`` (spares hidden)."""
    ncols = max(1, min(ncols, npanels))
    nrows = max(1, math.ceil(npanels / ncols))
    fig = TiersFigure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(nrows, ncols, squeeze=False).flat)
    for ax in axes[npanels:]:
        ax.set_axis_off()
    return fig, axes[:npanels]


def thin(n: int, keep: int = MAX_POINTS) -> np.ndarray:
    """Positions of an evenly spaced subset of ``n`` sorted values, both ends included."""
    if n <= keep:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, keep)).astype(np.int64))


def qq_panel(ax, values: np.ndarray, title: str, *, line: str = "fit") -> int:  # noqa: ANN001
    """Sample quantiles of ``values`` against normal quantiles (Blom's plotting positions).

    ``line``: ``"fit"`` draws the line through the quartiles (R's ``qqline``), ``"identity"`` the
    line y = x (for values already on the standard normal scale). Returns the points drawn.
    """
    v = np.sort(np.asarray(values, dtype=float)[np.isfinite(values)])
    n = v.size
    if n == 0:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        return 0
    q = stats.norm.ppf((np.arange(1, n + 1) - 0.375) / (n + 0.25))
    at = thin(n)
    ax.plot(q[at], v[at], "o", ms=2.5, alpha=0.6, color="C0", mec="none")
    if line == "identity":
        lim = [float(min(q[0], v[0])), float(max(q[-1], v[-1]))]
        ax.plot(lim, lim, color="C3", lw=1, ls="--")
    elif n >= 4:
        (y1, y3), (x1, x3) = np.quantile(v, [0.25, 0.75]), stats.norm.ppf([0.25, 0.75])
        slope = (y3 - y1) / (x3 - x1)
        ax.axline((x1, y1), slope=slope, color="C3", lw=1, ls="--")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("normal quantiles", fontsize=8)
    ax.set_ylabel("sample quantiles", fontsize=8)
    ax.tick_params(labelsize=7)
    if at.size < n:
        ax.text(0.02, 0.98, f"{at.size:,} of {n:,} points (even in rank)", fontsize=7,
                va="top", transform=ax.transAxes, color="0.4")  # fmt: skip
    return int(at.size)
