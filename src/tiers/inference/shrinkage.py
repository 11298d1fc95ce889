"""Per-group least-squares estimates beside the conditional modes: the data of a shrinkage plot.

For a random-effects term on factor ``g`` with effects ``Z_g`` the per-group estimate is the OLS
fit, within each group, of the partial residual ``r = y - X beta_hat - sum_{s != g} Z_s b_s`` (the
fixed effects and the other terms' conditional modes held at their estimates) on ``Z_g``: the
group's own, unpooled answer. The conditional mode is the same regression shrunk towards zero by
the penalty ``(Lambda' Z'Z Lambda + I)``; with ``theta -> infinity`` the two coincide
(lme4's ``lmList`` against ``ranef``; MixedModels.jl's ``shrinkageplot``). Groups whose ``Z_g`` has
rank below ``q`` in the group (a slope with one observation, no variation) have no OLS estimate
(NaN).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tiers.results.result import FitResult

__all__ = ["group_ols"]


def group_ols(res: FitResult) -> dict[str, pd.DataFrame]:
    """Per grouping term, each group's OLS estimate and conditional mode of every effect.

    Returns
    -------
    dict of DataFrame
        Keyed by the term's factor name (``"<name> (2)"`` for a second term on one factor), indexed
        by level label, with columns ``n`` (rows in the group) and per effect ``<effect>`` (the
        conditional mode) and ``<effect>_ols``.
    """
    prep = res.design
    terms = prep.terms
    modes = res.conditional_modes(cond_var=False)
    fitted = res.X @ np.asarray(res.beta)
    contrib = [np.einsum("ij,ij->i", t.Z, m.b[t.codes]) for t, m in zip(terms, modes, strict=True)]
    total = np.sum(contrib, axis=0) if contrib else np.zeros_like(fitted)
    out: dict[str, pd.DataFrame] = {}
    for t, m, c in zip(terms, modes, contrib, strict=True):
        r = res.y - fitted - (total - c)
        g, q = t.nlevels, t.q
        n = np.bincount(t.codes, minlength=g)
        ztz = np.zeros((g, q, q))
        ztr = np.zeros((g, q))
        for a in range(q):
            ztr[:, a] = np.bincount(t.codes, weights=t.Z[:, a] * r, minlength=g)
            for b in range(a, q):
                ztz[:, a, b] = ztz[:, b, a] = np.bincount(
                    t.codes, weights=t.Z[:, a] * t.Z[:, b], minlength=g
                )
        ols = np.full((g, q), np.nan)
        # a group's own regression exists where its Z'Z is well conditioned (full rank)
        cond = np.linalg.cond(ztz) if q > 1 else np.where(ztz[:, 0, 0] > 0, 1.0, np.inf)
        ok = np.isfinite(cond) & (cond < 1e10)
        if ok.any():
            ols[ok] = np.linalg.solve(ztz[ok], ztr[ok][..., None])[..., 0]
        cols: dict[str, np.ndarray] = {"n": n}
        for j, z in enumerate(t.znames):
            cols[z] = m.b[:, j]
            cols[f"{z}_ols"] = ols[:, j]
        key = (
            t.name
            if t.name not in out
            else f"{t.name} ({sum(k.startswith(t.name) for k in out) + 1})"
        )
        out[key] = pd.DataFrame(cols, index=pd.Index(t.factor.labels(prep.frame.data), name=t.name))
    return out
