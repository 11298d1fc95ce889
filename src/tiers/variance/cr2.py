"""CR2 cluster-robust covariance of the fixed effects, with Satterthwaite df.

Bell and McCaffrey (2002) and Pustejovsky and Tipton (2018, JBES 36(4)), for the working model
the mixed model fits (as R's clubSandwich does for ``lmer`` fits): per top-level cluster j, with
``Phi_j = I + Z_j Lambda Lambda' Z_j'`` (the marginal covariance over sigma^2), ``W_j = Phi_j^-1``,
``M = (sum_j X_j' W_j X_j)^-1`` and ``Phi_j = D_j' D_j`` (Cholesky),

    A_j = D_j' G_j^{-1/2} D_j,      G_j = D_j (Phi_j - X_j M X_j') D_j',
    vcov = M [sum_j X_j' W_j A_j e_j e_j' A_j W_j X_j] M,      e_j = y_j - X_j beta.

The adjustment makes the estimator unbiased when the working model is right (Pustejovsky and
Tipton 2018). The df of coefficient i (the working-model version of
Bell and McCaffrey's) are ``(tr P)^2 / sum P_jk^2`` with
``P_jk = [j = k] |g_ij|^2 - h_ij' h_ik``, ``g_ij = (M X_j' W_j A_j D_j')_i`` and
``h_ij = (M X_j' W_j A_j X_j L_M)_i`` (``M = L_M L_M'``).

Each cluster's ``Phi_j`` is formed densely: the cost is ``sum_j n_j^3``, meant for designs with
few, moderate clusters (the case CR2 is for).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from tiers.design.grouping import Codes
from tiers.design.terms import TermSpec
from tiers.errors import DataError
from tiers.variance.robust import RobustVcov

FloatArray = NDArray[np.float64]

#: Largest cluster (rows) CR2 forms its dense marginal covariance for.
MAX_CLUSTER_ROWS = 5000


def _inv_sqrt(G: FloatArray) -> FloatArray:
    """``G^{-1/2}`` of a symmetric positive semi-definite matrix (pseudo-inverse on its null space)."""
    vals, vecs = np.linalg.eigh(G)
    tol = vals.max(initial=0.0) * 1e-12
    inv = np.where(vals > tol, 1.0 / np.sqrt(np.where(vals > tol, vals, 1.0)), 0.0)
    return (vecs * inv) @ vecs.T


def cr2(
    y: FloatArray,
    X: FloatArray,
    terms: list[TermSpec],
    thetas: list[FloatArray],
    top_codes: Codes,
    beta: FloatArray,
    cluster: str,
) -> RobustVcov:
    """The CR2 covariance of ``beta`` and Satterthwaite df, clustered by ``top_codes``.

    Parameters
    ----------
    y, X : arrays
    terms, thetas : the random-effects terms (nested in the clusters) and their parameters.
    top_codes : array (n,)
        The cluster of each row.
    beta : array (p,)
        The fit's fixed effects.
    cluster : str
        The clustering level's name.
    """
    n, p = X.shape
    order = np.argsort(top_codes, kind="stable")
    G = int(top_codes.max()) + 1
    bounds = np.searchsorted(top_codes[order], np.arange(G + 1))
    if np.diff(bounds).max() > MAX_CLUSTER_ROWS:
        raise DataError(
            f"CR2 forms each cluster's covariance matrix densely; the largest cluster of {cluster} "
            f"has {np.diff(bounds).max():,} rows (at most {MAX_CLUSTER_ROWS:,}); use "
            "vce='robust'"
        )
    R = [t.Z @ t.cov.factor(th) for t, th in zip(terms, thetas, strict=True)]
    e = y - X @ beta
    chol, wx, xs = [], [], []
    for j in range(G):
        rows = order[bounds[j] : bounds[j + 1]]
        Phi = np.eye(rows.size)
        for t, Rk in zip(terms, R, strict=True):
            c = t.codes[rows]
            Phi += (Rk[rows] @ Rk[rows].T) * (c[:, None] == c[None, :])
        L = np.linalg.cholesky(Phi)  # Phi = L L' = D' D with D = L'
        chol.append((L, Phi))
        Xj = X[rows]
        wx.append(np.linalg.solve(Phi, Xj))  # W_j X_j
        xs.append((Xj, e[rows]))
    M = np.linalg.inv(sum(Xj.T @ WX for (Xj, _), WX in zip(xs, wx, strict=True)))
    LM = np.linalg.cholesky(M)
    meat = np.zeros((p, p))
    gsq = np.zeros((G, p))
    H = np.zeros((G, p, p))
    for j in range(G):
        L, Phi = chol[j]
        Xj, ej = xs[j]
        D = L.T
        DX = D @ Xj
        Gj = D @ Phi @ D.T - DX @ M @ DX.T
        A = D.T @ _inv_sqrt(Gj) @ D
        E = wx[j].T @ A  # X_j' W_j A_j
        u = E @ ej
        meat += np.outer(u, u)
        ME = M @ E
        gsq[j] = ((ME @ L) ** 2).sum(axis=1)  # |g_ij|^2 with Phi = L L'
        H[j] = ME @ Xj @ LM
    vcov = M @ meat @ M
    df = np.empty(p)
    for i in range(p):
        Hi = H[:, i, :]  # (G, p): row j is h_ij'
        P = -Hi @ Hi.T
        P[np.diag_indices(G)] += gsq[:, i]
        df[i] = np.trace(P) ** 2 / float((P * P).sum())
    return RobustVcov("cr2", cluster, G, vcov, df, None)
