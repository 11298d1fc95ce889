"""Figures of a fitted GLMM: which apply, and the two drawn differently from a linear fit's.

The caterpillar and the normal QQ plot of the conditional modes are the linear model's
(`tiers.report.plots.ranef`), fed the GLMM's modes and conditional SDs (lme4's
``ranef(glmer_fit, condVar = TRUE)``). Drawn here: the deviance residuals against the linear
predictor, and the variance shares on the latent scale of a binomial link. Not drawn, with the
reason (`GLMM_MISSING`): the normal QQ plot of residuals, the shrinkage plot against per-group OLS
and the profile zeta traces.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from tiers.report.plots._canvas import figure
from tiers.results.glmm import GlmmFit

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Rows beyond which residuals against the linear predictor are drawn as hexagonal bins.
HEXBIN_ROWS = 5_000

#: The figures a GLMM has no version of, and why.
GLMM_MISSING: dict[str, str] = {
    "shrinkage": "no shrinkage figure for a GLMM: it compares the modes with per-group OLS "
    "estimates, which a binary or count outcome does not have",
    "qq_residuals": "no normal QQ plot of the residuals for a GLMM: its deviance and Pearson "
    "residuals have no normal reference distribution (a 0/1 outcome's come in two bands)",
    "zeta": "no profile zeta figure for a GLMM: its profile intervals are in "
    "confint(method='profile') (tiers fit --ci profile)",
}


class GlmmFitted(Protocol):
    """What the figures read off a fitted GLMM (`tiers.api.glmm_result.GlmmResult`)."""

    @property
    def fit(self) -> GlmmFit:
        """The frozen estimates."""
        ...

    def residuals(self, type: Any = "deviance") -> np.ndarray:  # noqa: A002
        """Deviance, Pearson or response residuals."""
        ...

    def shares(self) -> pd.DataFrame:
        """Latent-scale variance shares (binomial)."""
        ...


def is_glmm(res: object) -> bool:
    """Whether ``res`` is a fitted GLMM."""
    return isinstance(getattr(res, "fit", None), GlmmFit)


def glmm_available(res: GlmmFitted) -> tuple[list[str], list[str]]:
    """The figures of ``res`` in the order of `KINDS`, and a note for each left out."""
    kinds = ["caterpillar", "qq_ranef", "residuals_fitted", "shares"]
    notes = list(GLMM_MISSING.values())
    if res.fit.family != "binomial":
        kinds.remove("shares")
        notes.append(
            "no variance-shares figure for a Poisson GLMM: a count has no latent scale with a "
            "fixed residual variance (shares are defined for the binomial links)"
        )
    elif not all(t.znames == ("(Intercept)",) for t in res.fit.terms):
        kinds.remove("shares")
        notes.append(
            "no variance-shares figure: with random slopes the variance at a level depends on the "
            "covariates, so it has no single share"
        )
    return kinds, notes


def glmm_frames(res: GlmmFitted, *, cond_var: bool = True) -> dict[str, pd.DataFrame]:
    """Per term, the conditional modes (and ``<effect>_sd`` columns) by group label.

    The layout of `tiers.inference.predict.ranef_frames`, so the linear model's figures draw them.
    """
    out: dict[str, pd.DataFrame] = {}
    for t in res.fit.terms:
        cols: dict[str, Any] = {z: t.b[:, j] for j, z in enumerate(t.znames)}
        if cond_var:
            for j, z in enumerate(t.znames):
                cols[f"{z}_sd"] = np.sqrt(np.clip(t.cond_var[:, j, j], 0.0, None))
        out[t.group] = pd.DataFrame(cols, index=pd.Index(list(t.levels), name=t.group))
    return out


def residuals_eta(res: GlmmFitted) -> Figure:
    """Deviance residuals against the linear predictor (link scale), with binned means.

    The line joins the mean residual in 20 bins of the linear predictor (equal counts): a trend
    in it is a misspecified mean (a missing covariate or the wrong link). A 0/1 outcome's
    residuals lie on two curves (y = 1 above, y = 0 below), so the cloud itself says little;
    the binned means carry the information. With few rows per group they rise from negative to
    positive even when the model is right: the conditional modes are shrunk towards zero, so the
    groups with the highest predictors were shrunk from above (as for a linear fit's residuals;
    `tiers.report.plots.fit.residuals_fitted`).
    """
    eta = res.fit.eta
    r = res.residuals("deviance")
    fig, (ax,) = figure(1, width=5.5, height=4.0)
    if eta.size > HEXBIN_ROWS:
        hb = ax.hexbin(eta, r, gridsize=60, bins="log", cmap="Blues", mincnt=1)
        fig.colorbar(hb, ax=ax, label="rows (log scale)")
    else:
        ax.plot(eta, r, "o", ms=2.5, alpha=0.5, color="C0", mec="none")
    order = np.argsort(eta, kind="stable")
    bins = np.array_split(order, min(20, max(eta.size // 5, 1)))
    ax.plot([eta[b].mean() for b in bins], [r[b].mean() for b in bins], color="C1", lw=1.5,
            marker="o", ms=3, label="mean in 20 bins")  # fmt: skip
    ax.axhline(0.0, color="0.3", lw=0.8, ls=":")
    ax.set_xlabel(f"linear predictor (X beta + Z b, {res.fit.link} scale)", fontsize=9)
    ax.set_ylabel("deviance residual", fontsize=9)
    ax.set_title(f"Deviance residuals against the linear predictor ({eta.size:,} rows)",
                 fontsize=10)  # fmt: skip
    ax.legend(fontsize=8, frameon=False)
    ax.text(0.01, 0.02, "a rising binned mean is expected with few rows per group (shrinkage)",
            transform=ax.transAxes, fontsize=7, color="0.4")  # fmt: skip
    return fig


def latent_shares(res: GlmmFitted) -> Figure:
    """Each level's share of the latent-scale variance (binomial links), labelled as such.

    The shares of `GlmmResult.shares`: the level variances and the link's latent residual
    variance (pi^2/3 logit, 1 probit, pi^2/6 cloglog). No intervals: tiers has none for a GLMM's
    shares.
    """
    table = res.shares()
    fig, (ax,) = figure(1, width=max(4.0, 1.1 * len(table) + 2.0), height=3.8)
    x = np.arange(len(table))
    share = table["share"].to_numpy()
    ax.bar(x, share, color=[f"C{k % 10}" for k in range(len(table))], alpha=0.75)
    for k in x:
        ax.text(k, share[k] + 0.01, f"{share[k]:.1%}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, table["component"].astype(str).tolist(), fontsize=8, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of the latent-scale variance", fontsize=9)
    ax.set_title(f"Variance shares on the latent scale ({res.fit.link} link)", fontsize=10)
    return fig
