"""One step of the tree elimination: a block Schur complement, with forward derivatives.

A level's own coordinates are removed from a batch of cross-products (one per parent group); the
nested engines (`tiers.engine.nested_block`, `tiers.engine.rside`) run it level by level, innermost
first.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def eliminate(
    C: FloatArray, own: slice, keep: NDArray[np.intp], T: FloatArray
) -> tuple[FloatArray, float]:
    """Remove the ``own`` coordinates from a batch of cross-products (block Schur complement)."""
    q = T.shape[0]
    Coo = C[:, own, own]
    Cro = C[:, keep, own]
    P = T.T @ Coo @ T + np.eye(q)
    L = np.linalg.cholesky(P)
    B = Cro @ T  # (N, d - q, q)
    Y = np.linalg.solve(L, B.transpose(0, 2, 1))  # L^-1 B'
    M = C[:, keep][:, :, keep] - Y.transpose(0, 2, 1) @ Y
    ld = 2.0 * float(np.log(np.diagonal(L, axis1=1, axis2=2)).sum())
    return M, ld


def eliminate_grad(
    C: FloatArray,
    dC: FloatArray | None,
    own: slice,
    keep: NDArray[np.intp],
    T: FloatArray,
    dT: FloatArray,
) -> tuple[FloatArray, FloatArray, float, FloatArray]:
    """`eliminate` with forward derivatives.

    Along the level's own parameters (``dT``), then along the deeper levels' parameters (``dC``,
    whose own-parameter derivatives are zero).

    With G = B P^-1:  d ld = tr(P^-1 dP),  dM = dC_rr - (dB G' + G dB' - G dP G').
    """
    q = T.shape[0]
    Coo = C[:, own, own]
    Cro = C[:, keep, own]
    A = T.T @ Coo
    P = A @ T + np.eye(q)
    Pinv = np.asarray(np.linalg.inv(P), dtype=np.float64)
    B = Cro @ T
    G = B @ Pinv
    M = C[:, keep][:, :, keep] - G @ B.transpose(0, 2, 1)
    ld = float(np.linalg.slogdet(P)[1].sum())
    dld, dM = _own_directions(A, Pinv, G, Cro, dT)
    if dC is not None and dC.shape[1]:
        dP = T.T @ dC[:, :, own, own] @ T
        dB = dC[:, :, keep, own] @ T
        dld = np.concatenate([dld, np.einsum("nij,nkji->k", Pinv, dP, optimize=True)])
        dM = np.concatenate([dM, dC[:, :, keep][:, :, :, keep] - _sandwich(G, dP, dB)], axis=1)
    return M, dM, ld, dld


def _sandwich(G: FloatArray, dP: FloatArray, dB: FloatArray) -> FloatArray:
    """``dB G' + G dB' - G dP G'`` for a batch of directions, (N, n_dir, r, r)."""
    # einsum's optimised path beats stacked matmuls of tiny matrices several-fold here
    GdB = np.einsum("nac,nkbc->nkab", G, dB, optimize=True)
    GdPG = np.einsum("nac,nkcd,nbd->nkab", G, dP, G, optimize=True)
    return GdB + GdB.transpose(0, 1, 3, 2) - GdPG


def _own_directions(
    A: FloatArray, Pinv: FloatArray, G: FloatArray, Cro: FloatArray, dT: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Derivatives of ``ld`` and ``M`` along a level's own parameters (``dT``).

    With ``A = T' C_oo``, ``dP = A dT + (A dT)'`` and ``dB = C_ro dT``. A Cholesky factor's
    derivative along one of its entries has a single non-zero ``v E_ij``, so each entry gives
    ``d ld = 2 v (P^-1 A)_ji`` and ``dM = v (y w' + w y')`` with ``y = G[:, j]`` and
    ``w = (G A - C_ro)[:, i]``: O(N q^2) per parameter instead of the O(N q^3) matrix products
    (80 scalar slopes on one factor, 600 rows: 0.21 -> 0.018 s per evaluation). Dense
    derivatives (exchangeable) take the matrix route.
    """
    n_dir = dT.shape[0]
    ks, ii, jj = np.nonzero(dT)
    if ks.size > n_dir * dT.shape[1]:
        S = A[:, None] @ dT[None]
        dP = S + S.transpose(0, 1, 3, 2)
        dld = np.einsum("nij,nkji->k", Pinv, dP, optimize=True)
        return dld, -_sandwich(G, dP, Cro[:, None] @ dT[None])
    v = dT[ks, ii, jj]
    traces = np.bincount(ks, weights=v * (Pinv @ A)[:, jj, ii].sum(axis=0), minlength=n_dir)
    y = G[:, :, jj]  # (N, r, entries)
    w = (G @ A - Cro)[:, :, ii] * v
    per_entry = np.einsum("nae,nbe->neab", y, w)
    per_entry += per_entry.transpose(0, 1, 3, 2)
    onto = np.zeros((ks.size, n_dir))
    onto[np.arange(ks.size), ks] = 1.0
    return 2.0 * traces.astype(np.float64), np.einsum(
        "neab,ek->nkab", per_entry, onto, optimize=True
    )
