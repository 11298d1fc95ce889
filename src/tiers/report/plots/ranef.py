"""Figures of the random effects: caterpillar, normal QQ, shrinkage towards the population.

The caterpillar plot is lme4's ``dotplot(ranef(m, condVar = TRUE))`` and MixedModelsMakie's
``caterpillar!``: each group's conditional mode with the normal interval of its conditional SD,
groups sorted by the first effect's mode (one order for every panel of a factor, so a group keeps
its row). With more than ``max_groups`` groups the panel shows ``max_groups`` of them evenly spaced
in that order, both extremes included, and says so: the caterpillar's shape stays and every label
stays readable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from tiers._lazy import stats
from tiers.inference.predict import ranef_frames
from tiers.inference.shrinkage import group_ols
from tiers.options import check_level
from tiers.report.plots._canvas import figure, qq_panel, thin
from tiers.report.plots.glmm import GlmmFitted, glmm_frames, is_glmm
from tiers.results.result import FitResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Groups a caterpillar panel shows by name; more are shown as an even subset in rank.
MAX_GROUPS = 60


def _effects(df) -> list[str]:  # noqa: ANN001
    return [c for c in df.columns if not c.endswith("_sd")]


def _frames(res: Any, cond_var: bool) -> dict:
    """The modes by factor: a linear fit's (`ranef_frames`) or a GLMM's (`glmm_frames`)."""
    if is_glmm(res):
        return glmm_frames(res, cond_var=cond_var)
    return ranef_frames(res, cond_var=cond_var)


def _pick(frames: dict, group: str | None) -> dict:
    if group is None:
        return frames
    if group not in frames:
        raise ValueError(f"group must be one of {', '.join(frames)}; got {group!r}")
    return {group: frames[group]}


def caterpillar(
    res: FitResult | GlmmFitted,
    group: str | None = None,
    *,
    level: float = 0.95,
    max_groups: int = MAX_GROUPS,
) -> Figure:
    """Conditional modes with intervals per grouping factor and effect, sorted.

    Parameters
    ----------
    res : FitResult or a fitted GLMM
        A GLMM's modes are on the link scale, with lme4's conditional SDs.
    group : str, optional
        One grouping factor (default: every factor, one row of panels each).
    level : float
        Level of the intervals (normal, from the conditional SDs).
    max_groups : int
        Groups shown by name per panel; more are shown as an even subset in rank, with a note.
    """
    check_level(level)
    if isinstance(max_groups, bool) or not isinstance(max_groups, int) or max_groups < 2:
        raise ValueError(f"max_groups must be an integer >= 2; got {max_groups!r}")
    try:
        frames = _pick(_frames(res, True), group)
        without = ""
    except ValueError as exc:
        if "conditional variances" not in str(exc):
            raise
        # a large crossed design whose conditional variances need a dense inverse: the modes
        # alone, and the figure says why there are no intervals
        frames = _pick(_frames(res, False), group)
        without = "no intervals: " + str(exc).split(";")[0]
    q = float(stats.norm.ppf(0.5 + level / 2.0))
    panels = sum(len(_effects(df)) for df in frames.values())
    shown = max(min(len(df), max_groups) for df in frames.values())
    fig, axes = figure(panels, ncols=4, width=3.6, height=1.2 + 0.16 * shown)
    k = 0
    for name, df in frames.items():
        effects = _effects(df)
        order = np.argsort(df[effects[0]].to_numpy(), kind="stable")
        at = order[thin(len(order), max_groups)]
        labels = df.index.astype(str).to_numpy()[at]
        for c in range(len(effects)):
            ax = axes[k]
            k += 1
            eff = effects[c]
            mode = df[eff].to_numpy()[at]
            y = np.arange(at.size)
            if f"{eff}_sd" in df.columns:
                half = q * df[f"{eff}_sd"].to_numpy()[at]
                ax.errorbar(mode, y, xerr=half, fmt="o", ms=3, color="C0", ecolor="0.55",
                            elinewidth=1)  # fmt: skip
            else:
                ax.plot(mode, y, "o", ms=3, color="C0")
            ax.axvline(0.0, color="0.3", lw=0.8, ls=":")
            ax.set_yticks(
                y, labels if c == 0 else [""] * at.size, fontsize=6 if at.size > 30 else 8
            )
            ax.set_ylim(-0.8, at.size - 0.2)
            ax.set_title(f"{name}: {eff}", fontsize=9)
            note = (
                f"\n{at.size} of {len(df):,} groups, evenly spaced in rank"
                if at.size < len(df)
                else ""
            )
            what = "conditional mode" + (f", {level * 100:.10g}% interval" if not without else "")
            ax.set_xlabel(f"{what}{note}", fontsize=8)
            ax.tick_params(axis="x", labelsize=7)
    if without:
        fig.suptitle(without, fontsize=8, color="0.35")
    elif is_glmm(res):
        link = res.fit.link  # type: ignore[union-attr]
        fig.suptitle(f"Conditional modes on the {link} (link) scale", fontsize=9)
    return fig


def qq_ranef(res: FitResult | GlmmFitted, group: str | None = None) -> Figure:
    """Normal QQ plot of the conditional modes, per grouping factor and effect."""
    frames = _pick(_frames(res, False), group)
    panels = [
        (name, eff, df[eff].to_numpy()) for name, df in frames.items() for eff in _effects(df)
    ]
    fig, axes = figure(len(panels))
    for ax, (name, eff, values) in zip(axes, panels, strict=True):
        qq_panel(ax, values, f"{name}: {eff}")
    fig.suptitle("Conditional modes against the normal distribution", fontsize=10)
    return fig


def shrinkage(res: FitResult, group: str | None = None) -> Figure:
    """Conditional modes against each group's own OLS estimate, per factor and effect.

    Points on the dashed line y = x are not shrunk; the flatter the cloud, the more the model pools
    the groups towards the population (see `tiers.inference.shrinkage`). Groups without an OLS
    estimate (too few rows for their effects) are left out and counted.
    """
    frames = _pick(group_ols(res), group)
    panels = [
        (n, e, df) for n, df in frames.items() for e in df.columns if e + "_ols" in df.columns
    ]
    fig, axes = figure(len(panels))
    for ax, (name, eff, df) in zip(axes, panels, strict=True):
        ols, mode = df[f"{eff}_ols"].to_numpy(), df[eff].to_numpy()
        ok = np.flatnonzero(np.isfinite(ols))
        at = ok[thin(ok.size)] if ok.size else ok
        ax.plot(ols[at], mode[at], "o", ms=3, alpha=0.6, color="C0", mec="none")
        if ok.size:
            lo, hi = float(np.min(ols[ok])), float(np.max(ols[ok]))
            ax.plot([lo, hi], [lo, hi], color="C3", lw=1, ls="--", label="no shrinkage")
            ax.legend(fontsize=7, loc="upper left", frameon=False)
        ax.axhline(0.0, color="0.3", lw=0.8, ls=":")
        ax.set_title(f"{name}: {eff}", fontsize=9)
        ax.set_xlabel("per-group OLS estimate", fontsize=8)
        ax.set_ylabel("conditional mode", fontsize=8)
        ax.tick_params(labelsize=7)
        missing = len(df) - ok.size
        if missing:
            ax.text(0.98, 0.02, f"{missing:,} groups without an OLS estimate", fontsize=7,
                    ha="right", transform=ax.transAxes, color="0.4")  # fmt: skip
    fig.suptitle("Shrinkage: conditional modes against per-group OLS", fontsize=10)
    return fig
