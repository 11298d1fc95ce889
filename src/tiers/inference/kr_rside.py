"""Kenward-Roger's parts with a residual structure, blockwise: ``Sigma = Z G Z' + V(psi)``.

The residuals of one residual group (`tiers.design.residuals`) have covariance ``V_g = sigma^2
R_g``. With ``R_g = L_g L_g'``, whitening every group by ``L_g^-1`` turns ``Sigma`` into
``sigma^2 (U U' + I)`` with ``U = L^-1 Z Lambda``, the algebra of `tiers.inference.kr_parts`:
the random effects' parts come from it unchanged on the whitened ``X`` and ``Z``. The residual
parameters ``psi`` have whitened derivatives ``G_a = L^-1 (dV / dpsi_a) L^-T``, block-diagonal
over the residual groups (small, dense, one per *pattern*), and with ``W0 = I - U K^-1 U'``,
``Sigma^-1 = sigma^-2 L^-T W0 L^-1`` (units of sigma dropped below, restored at the end):

    P_a   = -(W0 X)' G_a (W0 X)
    Q_ab  =  (G_a W0 X)' W0 (G_b W0 X)        Q_ra = (Z'W0 X)' D_r Z' W0 G_a W0 X
    T_ab  =  tr(G_a G_b) - 2 tr(K^-1 U'G_a G_b U) + tr(K^-1 U'G_a U K^-1 U'G_b U)
    T_ra  =  tr(D_r (I - H) Z'G_a Z (I - H)'),   H = Z'Z Lambda K^-1 Lambda'
    R_ab  =  (W0 X)' L^-1 (d2 V / dpsi_a dpsi_b) L^-T (W0 X)

(``X``, ``Z`` whitened; ``G_r = Z D_r Z'`` a random-effects parameter's). The traces are sums
over the blocks of random effects that share observations (the top-level groups): no n x n
matrix is formed.

**Parametrisation and R_ij.** The residual covariance is ``V_ij = a_i a_j C_ij(kappa)``, with
``a_i^2 = v_s`` the residual variance of row i's stratum (by=, or its occasion for unstructured
residuals; ``sigma^2`` alone without either) and ``kappa`` the correlation parameters on their
natural scale (AR(1)'s phi, the lag or pair correlations). Kenward and Roger (1997) include the
second derivatives ``R_ij`` of ``Sigma`` in the adjustment, ``Lambda = sum_ij W_ij (Q_ij -
P_i Phi P_j - R_ij / 4)``, and so does SAS's ``DDFM=KR`` (``KR(FIRSTORDER)`` drops them).
``P``, ``Q`` and ``W`` transform as tensors under a change of parameters, so the df and the
first-order adjustment are the same in every parametrisation; ``R_ij`` is not a tensor (a
nonlinear change adds ``-sum_k (d2 psi_k / d eta_i d eta_j) P_k``), so the full adjustment
depends on the parametrisation (Kenward and Roger 2009, CSDA 53, 2583-2595, who trace this to
the bias of the covariance estimates that the 1997 expansion ignores). tiers therefore uses the
parametrisation SAS uses for the same structure: where ``Sigma`` is linear in its covariances
(independent residuals with variances by stratum, exchangeable and Toeplitz without strata,
unstructured: SAS's CS, TOEP and UN) ``R_ij = 0``, as in pbkrtest, so that exchangeable
residuals and a random intercept give the same answer; AR(1) and CAR(1) (SAS's AR(1) and
SP(POW): ``sigma^2, phi``) and correlations with variances by stratum (SAS's heterogeneous
CSH, ARH, TOEPH: variances and correlations), which have no linear parametrisation, include
``R_ij`` in the (variances, correlations) parametrisation above.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from tiers.design.residual_params import ResidualParams
from tiers.design.residuals import ResidualLayout, SizeClass
from tiers.design.terms import TermSpec
from tiers.inference.kr_parts import (
    Algebra,
    KRParts,
    _Large,
    _Small,
    build_algebra,
    linear_parts,
)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def is_linear(params: ResidualParams) -> bool:
    """The structure is linear in its covariances (then ``R_ij = 0``; see the module docstring)."""
    kind = params.spec.kind
    strata = params.spec.by is not None
    return kind in ("independent", "unstructured") or (
        kind in ("exchangeable", "toeplitz") and not strata
    )


def residual_names(params: ResidualParams) -> tuple[str, ...]:
    """KR's residual parameters: the variances (per stratum or occasion), then the correlations."""
    labels = ((params.ratio_reference or ""),) + params.ratio_labels
    what = params.spec.time if params.spec.kind == "unstructured" else params.spec.by
    if len(labels) == 1:
        variances: tuple[str, ...] = ("var(Residual)",)
    else:
        variances = tuple(f"var(Residual {what}={lab})" for lab in labels)
    return variances + params.corr_names


def _correlation_derivatives(
    params: ResidualParams, corr: FloatArray, times: FloatArray, occasion: IntArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``C``, ``dC / dkappa_k`` (K, P, T, T) and ``d2C / dkappa_k dkappa_l`` (K, K, P, T, T)."""
    kind = params.spec.kind
    P, T = times.shape
    eye = np.broadcast_to(np.eye(T), (P, T, T))
    K = corr.size
    d2C = np.zeros((K, K, P, T, T))
    if kind in ("ar1", "car1"):
        phi = float(corr[0])
        lag = np.abs(times[:, :, None] - times[:, None, :])
        one, two = lag > 0, (lag > 0) & (lag != 1)
        C = np.where(one, np.power(phi, np.where(one, lag, 1.0)), 1.0)
        dC = np.where(one, lag * np.power(phi, np.where(one, lag - 1.0, 0.0)), 0.0)[None]
        d2C[0, 0] = np.where(two, lag * (lag - 1.0) * np.power(phi, np.where(two, lag - 2, 0)), 0)
        return C, dC, d2C
    if kind == "exchangeable":
        return eye + corr[0] * (1.0 - eye), (1.0 - eye)[None], d2C
    if kind == "toeplitz":
        lag = np.abs(times[:, :, None] - times[:, None, :])
        dC = np.array([(lag == h).astype(np.float64) for h in range(1, K + 1)])
        return eye + np.einsum("k,kpij->pij", corr, dC), dC, d2C
    if kind == "unstructured":
        n_occ = 0 if params.occasions is None else params.occasions.size
        a, b = np.triu_indices(n_occ, 1)
        oi, oj = occasion[:, :, None], occasion[:, None, :]
        dC = np.array(
            [((oi == i) & (oj == j)) | ((oi == j) & (oj == i)) for i, j in zip(a, b, strict=True)],
            dtype=np.float64,
        ).reshape(K, P, T, T)
        return eye + np.einsum("k,kpij->pij", corr, dC), dC, d2C
    return np.array(eye), np.zeros((0, P, T, T)), d2C


def residual_derivatives(
    params: ResidualParams, rho: FloatArray, sigma: float, c: SizeClass
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``V``, ``dV / dpsi`` and ``d2V / dpsi dpsi`` of the patterns of one size class.

    ``psi`` = (variances by stratum or occasion, correlations), see the module docstring; shapes
    (P, T, T), (m, P, T, T), (m, m, P, T, T).
    """
    rho = np.asarray(rho, dtype=np.float64)
    kind = params.spec.kind
    corr = params.correlations(rho[: params.n_corr])
    v = sigma**2 * np.exp(2.0 * np.concatenate(([0.0], rho[params.n_corr :])))
    code = c.occasion if kind == "unstructured" else c.strata
    C, dC, d2C = _correlation_derivatives(params, corr, c.times, c.occasion)
    a = np.sqrt(v[code])
    f = a[:, :, None] * a[:, None, :]  # (P, T, T)
    S, K = v.size, corr.size
    # V_ij = prod_s v_s^(e_s / 2) C_ij with e_s counting i and j in stratum s
    hit = [(code == s).astype(np.float64) for s in range(S)]
    half = np.array([(h[:, :, None] + h[:, None, :]) / 2.0 for h in hit])
    m = S + K
    dV = np.empty((m,) + C.shape)
    d2V = np.zeros((m, m) + C.shape)
    fC = f * C
    for s in range(S):
        dV[s] = half[s] * fC / v[s]
        for t in range(S):
            d2V[s, t] = half[s] * half[t] * fC / (v[s] * v[t])
        d2V[s, s] -= half[s] * fC / v[s] ** 2
        for k in range(K):
            d2V[s, S + k] = d2V[S + k, s] = half[s] * f * dC[k] / v[s]
    for k in range(K):
        dV[S + k] = f * dC[k]
        for j in range(K):
            d2V[S + k, S + j] = f * d2C[k, j]
    return fC, dV, d2V


def _per_row(layout: ResidualLayout, mats: list[FloatArray], Y: FloatArray) -> FloatArray:
    """``blockdiag_g(M_g) Y`` with one (P, T, T) stack of pattern blocks per size class."""
    out = np.empty_like(Y)
    for c, M in zip(layout.classes, mats, strict=True):
        out[c.rows] = M[c.pattern] @ Y[c.rows]
    return out


def _sparse(layout: ResidualLayout, mats: list[FloatArray], n: int) -> sp.csr_matrix:
    """``blockdiag_g(M_g)`` as a sparse n x n matrix."""
    r, col, val = [], [], []
    for c, M in zip(layout.classes, mats, strict=True):
        T = c.size
        r.append(np.broadcast_to(c.rows[:, :, None], (c.rows.shape[0], T, T)).ravel())
        col.append(np.broadcast_to(c.rows[:, None, :], (c.rows.shape[0], T, T)).ravel())
        val.append(M[c.pattern].ravel())
    return sp.csr_matrix(
        (np.concatenate(val), (np.concatenate(r), np.concatenate(col))), shape=(n, n)
    )


def _blocks_of(alg: Algebra, M: sp.spmatrix, *, permuted: bool = False) -> list[Any]:
    """The diagonal blocks of ``M`` (random effects x random effects), per `Algebra` block.

    Dense stacks (nb, s, s) for stacked small blocks, sparse (s, s) for a large one (`_Large`).
    ``permuted``: ``M`` is already in block order.
    """
    st = alg.st
    Mp = sp.coo_matrix(M) if permuted else st.permute(M)
    Mc = sp.csr_matrix(Mp) if any(isinstance(b, _Large) for b in alg.blocks) else None
    out: list[Any] = []
    for blk in alg.blocks:
        if isinstance(blk, _Large):
            assert Mc is not None
            a, s = int(blk.idx[0]), blk.idx.size
            out.append(sp.csr_matrix(Mc[a : a + s][:, a : a + s]))
        else:
            out.append(st.stack(Mp, blk.blocks, blk.idx.shape[1]))
    return out


def residual_parts(
    terms: list[TermSpec],
    X: FloatArray,
    theta: FloatArray,
    sigma: float,
    layout: ResidualLayout,
) -> KRParts:
    """``Phi``, ``P``, ``Q``, ``T`` and ``R`` of a nested model with a residual structure.

    ``theta`` is the fit's ``(theta of the random effects, rho)``. The parameters are the random
    effects' covariances (as `tiers.inference.kr_parts`), then `residual_names`.
    """
    params = layout.params
    n, p = X.shape
    theta = np.asarray(theta, dtype=np.float64)
    n_re = sum(t.cov.n_theta for t in terms)
    th, rho = theta[:n_re], theta[n_re:]
    Linv, G, H2 = [], [], []
    for c in layout.classes:
        fC, dV, d2V = residual_derivatives(params, rho, sigma, c)
        Li = np.linalg.inv(np.linalg.cholesky(fC / sigma**2))  # whitening by the relative R_g
        Linv.append(Li)
        G.append(Li @ dV @ np.swapaxes(Li, -1, -2))
        H2.append(Li @ d2V @ np.swapaxes(Li, -1, -2))
    m = G[0].shape[0]
    Xw = _per_row(layout, Linv, X)
    terms_w = [dataclasses.replace(t, Z=_per_row(layout, Linv, t.Z)) for t in terms]
    alg = build_algebra(terms_w, n, th)
    base = linear_parts(alg, Xw, sigma)
    e = len(alg.Dp)  # random-effects parameters
    M = e + m
    s2 = sigma * sigma
    P = np.zeros((M, p, p))
    Q = np.zeros((M, M, p, p))
    T = np.zeros((M, M))
    P[:e], Q[:e, :e], T[:e, :e] = base.P[:e], base.Q[:e, :e], base.T[:e, :e]
    WX = alg.w0(Xw)
    Y = [_per_row(layout, [g[a] for g in G], WX) for a in range(m)]  # G_a W0 X
    WY = [alg.w0(y) for y in Y]
    C1 = alg.zt(WX)
    for a in range(m):
        P[e + a] = -(WX.T @ Y[a]) / s2**2
        Ca = alg.zt(WY[a])
        for b in range(m):
            Q[e + a, e + b] = (Y[a].T @ WY[b]) / s2**3
        for r in range(e):
            Q[r, e + a] = (C1.T @ (alg.Dp[r] @ Ca)) / s2**3
            Q[e + a, r] = Q[r, e + a].T
    kinv = [_kinv(blk) for blk in alg.blocks]
    Gs = [_sparse(layout, [gc[a] for gc in G], n) for a in range(m)]
    T[e:, e:] = _trace_residual(layout, alg, G, Gs, kinv) / s2**2
    T[:e, e:] = _trace_mixed(alg, Gs, kinv) / s2**2
    T[e:, :e] = T[:e, e:].T
    R = None
    if not is_linear(params):
        R = np.zeros((M, M, p, p))
        for a in range(m):
            for b in range(a, m):
                Rab = WX.T @ _per_row(layout, [h[a, b] for h in H2], WX) / s2**2
                R[e + a, e + b] = R[e + b, e + a] = 0.5 * (Rab + Rab.T)
    names = (*alg.names, *residual_names(params))
    return KRParts(base.phi, P, Q, T, names, alg.largest, R)


def _trace_residual(
    layout: ResidualLayout,
    alg: Algebra,
    G: list[FloatArray],
    Gs: list[sp.csr_matrix],
    kinv: list[FloatArray],
) -> FloatArray:
    """``tr(W0 G_a W0 G_b)`` for the residual parameters (units of sigma).

    ``G``: per size class the (m, P, T, T) pattern blocks of the ``G_a``; ``Gs``: each ``G_a``
    as a sparse n x n matrix; ``kinv``: each block's ``K^-1``.
    """
    m = G[0].shape[0]
    out = np.zeros((m, m))
    for c, g in zip(layout.classes, G, strict=True):
        count = np.bincount(c.pattern, minlength=g.shape[1]).astype(np.float64)
        out += np.einsum("p,apij,bpij->ab", count, g, g)
    U = sp.csr_matrix(alg.Z @ alg.Lam)
    GU = [Ga @ U for Ga in Gs]
    S = [_blocks_of(alg, U.T @ gu) for gu in GU]  # U'G_a U
    BB = {(a, b): _blocks_of(alg, GU[a].T @ GU[b]) for a in range(m) for b in range(a, m)}
    for i, blk in enumerate(alg.blocks):
        Kinv = kinv[i]
        large = isinstance(blk, _Large)
        # K^-1 S_a: sparse S_a on the right costs nnz * s, not s^3
        KS = [(S[a][i].T @ Kinv.T).T if large else Kinv @ S[a][i] for a in range(m)]
        for a in range(m):
            for b in range(a, m):
                # tr(K^-1 U'G_a G_b U), U'G_b G_a U being its transpose
                B = BB[a, b][i]
                if large:
                    Bc = sp.coo_matrix(B)
                    val = -2.0 * float(Kinv[Bc.col, Bc.row] @ Bc.data)
                    val += float(np.sum(KS[a] * KS[b].T))
                else:
                    val = -2.0 * float(np.einsum("bij,bji->", Kinv, B))
                    val += float(np.einsum("bij,bji->", KS[a], KS[b]))
                out[a, b] += val
                if b != a:
                    out[b, a] += val
    return out


def _trace_mixed(alg: Algebra, Gs: list[sp.csr_matrix], kinv: list[FloatArray]) -> FloatArray:
    """``tr(W0 G_r W0 G_a)`` for random-effects ``r`` and residual ``a`` (units of sigma)."""
    m = len(Gs)
    e = len(alg.Dp)
    out = np.zeros((e, m))
    Z = sp.csr_matrix(alg.Z)
    N = [_blocks_of(alg, Z.T @ (Ga @ Z)) for Ga in Gs]
    D = [_blocks_of(alg, Dr, permuted=True) for Dr in alg.Dp]
    for i, blk in enumerate(alg.blocks):
        Kinv = kinv[i]
        if isinstance(blk, _Small):
            L = blk.L
            IH = np.eye(L.shape[-1]) - blk.A @ L @ Kinv @ np.swapaxes(L, -1, -2)
            for a in range(m):
                Mt = IH @ N[a][i] @ np.swapaxes(IH, -1, -2)
                for r in range(e):
                    out[r, a] += float(np.sum(D[r][i] * Mt))
            continue
        # one large block: I - H = I - (A Lambda K^-1) Lambda', by sparse-dense products, and
        # tr(D_r (I - H) N_a (I - H)') on D_r's entries only: sum_ij D_ij F_j . IH_i, F = IH N_a
        AL = sp.csr_matrix(blk.A @ blk.L)
        IH = np.eye(Kinv.shape[0]) - (blk.L @ np.asarray(AL @ Kinv).T).T
        for a in range(m):
            F = np.asarray((N[a][i].T @ IH.T).T)
            for r in range(e):
                Dc = sp.coo_matrix(D[r][i])
                out[r, a] += float(np.einsum("n,nk,nk->", Dc.data, F[Dc.col], IH[Dc.row]))
    return out


def _kinv(blk: _Small | _Large) -> FloatArray:
    """``K^-1`` of a block: (nb, s, s) for stacked small blocks, (s, s) for a large one."""
    if isinstance(blk, _Large):
        return blk.inverse()
    return np.asarray(blk.Kinv)
