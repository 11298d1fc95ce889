"""Cluster-robust (by panel id) scores of ``xtreg, fe`` and ``xtreg, re`` on a Dask DataFrame.

The sandwich (Arellano 1987; `tiers.panel.core._cluster_sandwich`) needs each panel's score
``s_g = Z_g' e_g``, and with the coefficients known that is linear in the panel's cross-product of
``[1 X y]``: ``s_g = M_g[:, y] - M_g[:, x] b``. The per-panel sums (`tiers.scale.panel._Sums`) hold
the first moments only, so one more pass gathers each panel's products of the centred columns
(``(k + 1)(k + 2) / 2`` numbers a panel, Dask's tree reduction of a ``groupby().sum()``); the
centring at the global means keeps the within differences ``P_g - S_g S_g' / n_g`` free of
cancellation, as in `tiers.scale.panel`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from tiers.errors import DataError

FloatArray = NDArray[np.float64]


def group_products(
    ddf: Any, y: str, xs: Sequence[str], id: str, center: FloatArray, labels: pd.Index
) -> FloatArray:
    """Per panel, ``sum (c c')`` of ``c = [X y] - center`` over its complete rows.

    Returns
    -------
    array (n, k + 1, k + 1)
        In the order of ``labels`` (the panels as `tiers.scale.panel._prepare` numbers them).
    """
    cols = [*xs, y]
    pairs = [(a, b) for a in range(len(cols)) for b in range(a, len(cols))]
    names = [f"p{a}_{b}" for a, b in pairs]

    def products(df: pd.DataFrame) -> pd.DataFrame:
        # the rows the sums were taken over: complete in the id and every column used
        df = df[[id, *cols]].dropna()
        c = df[cols].to_numpy(dtype=np.float64) - center
        out = pd.DataFrame(
            {n: c[:, a] * c[:, b] for n, (a, b) in zip(names, pairs, strict=True)},
            index=df.index,
        )
        out[id] = df[id].to_numpy()
        return out

    meta = pd.DataFrame({n: pd.Series(dtype=np.float64) for n in names})
    meta[id] = ddf._meta[id]
    sums = ddf.map_partitions(products, meta=meta).groupby(id).sum().compute()
    sums = sums.reindex(labels)
    if sums.isna().to_numpy().any():
        raise DataError(
            f"the panels of {id!r} changed between passes over the data (ids that one pass saw "
            "and the other did not); read the data again"
        )
    k1 = len(cols)
    P = np.empty((len(labels), k1, k1))
    for n, (a, b) in zip(names, pairs, strict=True):
        P[:, a, b] = P[:, b, a] = sums[n].to_numpy(dtype=np.float64)
    return P


def fe_scores(
    P: FloatArray, S: FloatArray, Ti: FloatArray, keep: list[int], b: NDArray[np.floating]
) -> FloatArray:
    """Scores of the within regression, (n, K + 1), the constant's last.

    ``P`` and ``S`` over the columns ``[X y]`` (``keep`` indexes X); the within cross-product of a
    panel is ``P_g - S_g S_g' / n_g``. The constant's score is the sum of the panel's within
    residuals: zero.
    """
    W = P - S[:, :, None] * (S / Ti[:, None])[:, None, :]
    yc = P.shape[1] - 1
    Wxy = W[:, keep, yc]
    Wxx = W[:, keep][:, :, keep]
    scores = np.zeros((P.shape[0], len(keep) + 1))
    scores[:, :-1] = Wxy - Wxx @ b
    return scores


def re_scores(
    P: FloatArray,
    S: FloatArray,
    Ti: FloatArray,
    m: FloatArray,
    th: FloatArray,
    order: list[int],
    b: NDArray[np.floating],
) -> FloatArray:
    """Scores of the quasi-demeaned regression, (n, K + 1), in the order of ``b``.

    ``P``, ``S`` and ``m`` over ``[1 X y]`` with the intercept first (its centred value is 1);
    ``order`` lists the regressors, the constant and the response. With ``zs_i = d_i - theta_g
    dbar_g`` and ``d_i = m + e_i`` a panel's ``sum zs zs'`` is ``G_g - (2 theta_g - theta_g^2)
    S_g S_g' / n_g + (1 - theta_g)^2 (n_g m m' + m S_g' + S_g m')`` (`tiers.scale.panel`).
    """
    n, k1 = P.shape[0], P.shape[1] + 1
    G = np.empty((n, k1, k1))
    G[:, 1:, 1:] = P
    G[:, 0, 0] = Ti
    G[:, 0, 1:] = G[:, 1:, 0] = S[:, 1:]
    G = G[:, order][:, :, order]
    So, mo = S[:, order], m[order]
    shrink = (2.0 * th - th**2) / Ti
    level = (1.0 - th) ** 2
    M = G - (So * shrink[:, None])[:, :, None] * So[:, None, :]
    M += level[:, None, None] * (
        Ti[:, None, None] * np.outer(mo, mo)[None]
        + mo[None, :, None] * So[:, None, :]
        + So[:, :, None] * mo[None, None, :]
    )
    r = len(order) - 1
    return np.asarray(M[:, :r, r] - M[:, :r, :r] @ b)
