"""Conditional modes and conditional covariances on a nesting tree (both nested engines).

With ``r = y - X beta``, ``Lambda`` the block-diagonal relative factor and
``P = Lambda' Z' Z Lambda + I`` (Bates et al. 2015, eqs. 10-18),

    u = P^-1 Lambda' Z' r,     b = Lambda u,     Var(b | y) = sigma^2 Lambda P^-1 Lambda'

(lme4's ``ranef(condVar = TRUE)``: given beta_hat and theta_hat; only the diagonal blocks, one
q x q block per group, are computed). For nested grouping ``P`` is a tree. Eliminating innermost
first, a node holds the cross-product of its subtree over its own effects, its ancestors' and
``r``; its own effects are removed by a Schur complement and the rest is added to its parent.
Back-substitution from the root gives ``u``, and the covariance of each node with its ancestors
follows from its parent's (the Takahashi recursion on a tree):
``S_ja = -G_ja S_aa``, ``S_jj = P_jj^-1 + G_ja S_aa G_ja'`` with ``G = P_jj^-1 P_ja``. The cost is
linear in the number of groups.
"""

from __future__ import annotations

from typing import cast

import numpy as np
from numpy.typing import NDArray

from tiers.design.terms import TermSpec
from tiers.engine.contract import TermModes

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def block_diag(blocks: list[FloatArray]) -> FloatArray:
    """Dense block-diagonal matrix of square blocks."""
    q = sum(b.shape[0] for b in blocks)
    T = np.zeros((q, q))
    at = 0
    for b in blocks:
        T[at : at + b.shape[0], at : at + b.shape[0]] = b
        at += b.shape[0]
    return T


def _sum_into(M: FloatArray, parent: IntArray, nparent: int) -> FloatArray:
    """Sum the rows of ``M`` (N, ...) into ``nparent`` groups."""
    N = M.shape[0]
    flat = M.reshape(N, -1)
    # a bincount per column adds each group's rows in row order, as the sparse product did,
    # without importing scipy.sparse on the fit's path (0.02-0.06 s of a fresh process)
    out = np.empty((nparent, flat.shape[1]))
    for j in range(flat.shape[1]):
        out[:, j] = np.bincount(parent, weights=flat[:, j], minlength=nparent)
    return out.reshape((nparent,) + M.shape[1:])


def ancestor(parents: list[IntArray], k: int, level: int) -> IntArray:
    """The ancestor at ``level`` of each node of level ``k``."""
    idx = np.arange(parents[k - 1].size)
    for j in range(k, level, -1):
        idx = parents[j - 1][idx]
    return idx


def tree_modes(
    C: FloatArray,
    Ts: list[FloatArray],
    parents: list[IntArray],
    sizes: list[int],
    sigma: float,
    cond_var: bool,
) -> list[tuple[FloatArray, FloatArray | None]]:
    """Per level (outermost first): modes ``b`` (groups, q_k) and covariance blocks.

    Parameters
    ----------
    C : array (leaves, D, D)
        Per innermost group, ``sum_i w_i w_i'`` over its rows with
        ``w_i = (z_i0 T_0, ..., z_iK-1 T_K-1, r_i)`` (the last entry's square is not used).
    Ts : list of arrays
        Relative factor of each level.
    parents : list of IntArray
        ``parents[k]`` maps groups of level k + 1 to level k.
    sizes : list of int
        Groups per level.
    sigma : float
    cond_var : bool
        Also the conditional covariance blocks (data scale).
    """
    K = len(Ts)
    qs = [T.shape[0] for T in Ts]
    off = np.concatenate(([0], np.cumsum(qs))).astype(int)
    C = C.copy()
    Pinv: list[FloatArray] = [np.empty(0)] * K
    G: list[FloatArray] = [np.empty(0)] * K
    for k in range(K - 1, -1, -1):
        lo, hi = int(off[k]), int(off[k + 1])
        C[:, np.arange(lo, hi), np.arange(lo, hi)] += 1.0
        rest = np.r_[0:lo, C.shape[1] - 1]
        P = C[:, lo:hi, lo:hi]
        B = C[:, lo:hi][:, :, rest]
        Pinv[k] = cast(FloatArray, np.linalg.inv(P))
        G[k] = Pinv[k] @ B
        if k > 0:
            M = C[:, rest][:, :, rest] - B.transpose(0, 2, 1) @ G[k]
            C = _sum_into(M, parents[k - 1], sizes[k - 1])
    u: list[FloatArray] = []
    S_chain = Pinv[0]
    out: list[tuple[FloatArray, FloatArray | None]] = []
    for k in range(K):
        rhs = G[k][:, :, -1]
        Ga = G[k][:, :, :-1]
        if k == 0:
            u.append(rhs)
            S_jj = Pinv[0]
        else:
            up = parents[k - 1]
            anc = np.concatenate([u[a][ancestor(parents, k, a)] for a in range(k)], axis=1)
            u.append(rhs - np.einsum("nqa,na->nq", Ga, anc))
            if cond_var:
                S_a = S_chain[up]
                S_ja = -Ga @ S_a
                S_jj = Pinv[k] - S_ja @ Ga.transpose(0, 2, 1)
                if k < K - 1:
                    S_chain = np.concatenate(
                        [
                            np.concatenate([S_a, S_ja.transpose(0, 2, 1)], axis=2),
                            np.concatenate([S_ja, S_jj], axis=2),
                        ],
                        axis=1,
                    )
        cov = sigma**2 * Ts[k] @ S_jj @ Ts[k].T if cond_var else None
        out.append((u[k] @ Ts[k].T, cov))
    return out


def split_levels(
    levels: list[list[TermSpec]], per_level: list[tuple[FloatArray, FloatArray | None]]
) -> list[TermModes]:
    """Per term, in theta order, the columns of its level's modes and covariance blocks.

    Theta order: levels outermost first, terms within a level in order.
    """
    out: list[TermModes] = []
    for lv, (b, cov) in zip(levels, per_level, strict=True):
        at = 0
        for t in lv:
            sl = slice(at, at + t.q)
            out.append(TermModes(b[:, sl], None if cov is None else cov[:, sl, sl]))
            at += t.q
    return out
