"""Conditional modes of the random effects (BLUPs) and their conditional covariances, computed from
the terms' model matrices at the fitted theta, beta and sigma.

With ``r = y - X beta_hat``, ``Lambda`` the block-diagonal relative factor and
``P = Lambda' Z' Z Lambda + I`` (Bates et al. 2015, eqs. 10-18),

    u = P^-1 Lambda' Z' r,     b = Lambda u,     Var(b | y) = sigma^2 Lambda P^-1 Lambda'

(lme4's ``ranef(condVar = TRUE)``: the conditional variance given beta_hat and theta_hat; only the
diagonal blocks, one q x q block per group, are computed).

* Nested grouping (the ``nested`` and ``tree`` engines): ``P`` is a tree. Eliminating innermost
  first, a node holds the cross-product of its subtree over its own effects, its ancestors' and
  ``r``; its own effects are removed by a Schur complement and the rest is added to its parent.
  Back-substitution from the root gives ``u``, and the covariance of each node with its ancestors
  follows from its parent's (the Takahashi recursion on a tree):
  ``S_ja = -G_ja S_aa``, ``S_jj = P_jj^-1 + G_ja S_aa G_ja'`` with ``G = P_jj^-1 P_ja``. The cost is
  linear in the number of groups: no size limit.
* Any other grouping (crossed): ``Z Lambda`` is assembled as a sparse matrix and ``P`` factored by
  SuperLU; the diagonal blocks of ``P^-1`` come from a dense inverse when ``P`` has at most
  `DENSE_LIMIT` columns, otherwise from the engine (conditional SDs only, no within-group
  covariances), or the request is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.sparse.linalg import splu

from tiers.engine.nested_block import outer_sums as _outer_sums

if TYPE_CHECKING:
    from tiers.design.terms import TermSpec
    from tiers.results.result import LmmResult

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Largest number of random effects for which the conditional covariances of crossed designs are
#: computed from a dense inverse (about 1 s and 200 MB at the limit).
DENSE_LIMIT = 5000


@dataclass(frozen=True)
class TermModes:
    """One term's conditional modes ``b`` (nlevels, q) and, when asked for, conditional covariance
    blocks ``cov`` (nlevels, q, q), on the data scale (sigma^2 included)."""

    b: FloatArray
    cov: FloatArray | None


def conditional_modes(res: LmmResult, *, cond_var: bool = True) -> list[TermModes]:
    """Modes (and conditional covariance blocks) of every term at the fit's estimates, in theta
    order; cached on the result."""
    from tiers._threads import single_thread_blas

    key = ("ranef", cond_var)
    if key not in res._cache:
        with single_thread_blas():
            res._cache[key] = modes_at(
                res._refit_args["prepared"],
                np.asarray(res.theta),
                np.asarray(res.beta),
                res.sigma,
                cond_var=cond_var,
                problem=res._problem,
            )
    return res._cache[key]


def modes_at(
    prep,
    theta: FloatArray,
    beta: FloatArray,
    sigma: float,
    *,
    cond_var: bool = True,
    problem=None,
) -> list[TermModes]:
    """Modes (and conditional covariance blocks) of every term at given estimates."""
    r = prep.frame.y - prep.frame.X @ beta
    thetas = _split(prep.terms, theta)
    if prep.nesting is not None and prep.levels:
        return _tree(prep, r, thetas, sigma, cond_var)
    return _sparse(problem, theta, prep.terms, r, thetas, sigma, cond_var)


def _split(terms: list[TermSpec], theta: FloatArray) -> list[FloatArray]:
    out, at = [], 0
    for t in terms:
        out.append(theta[at : at + t.cov.n_theta])
        at += t.cov.n_theta
    return out


def _block_diag(blocks: list[FloatArray]) -> FloatArray:
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
    S = sp.csr_matrix((np.ones(N), (parent, np.arange(N))), shape=(nparent, N))
    return np.asarray(S @ M.reshape(N, -1)).reshape((nparent,) + M.shape[1:])


def _tree(prep, r: FloatArray, thetas: list[FloatArray], sigma: float, cond_var: bool):
    """Nested grouping: elimination innermost first, back-substitution, Takahashi recursion."""
    levels = prep.levels
    K = len(levels)
    parents = list(prep.nesting.tree.parents)
    index = {id(t): i for i, t in enumerate(prep.terms)}
    Ts = [_block_diag([t.cov.factor(thetas[index[id(t)]]) for t in lv]) for lv in levels]
    qs = [T.shape[0] for T in Ts]
    off = np.concatenate(([0], np.cumsum(qs))).astype(int)
    D = int(off[-1]) + 1
    W = np.empty((r.size, D))
    for k, lv in enumerate(levels):
        W[:, off[k] : off[k + 1]] = np.hstack([t.Z for t in lv]) @ Ts[k]
    W[:, -1] = r
    sizes = [lv[0].nlevels for lv in levels]
    C = _outer_sums(W, levels[-1][0].codes, sizes[-1])
    del W
    Pinv: list[FloatArray] = [np.empty(0)] * K
    G: list[FloatArray] = [np.empty(0)] * K
    for k in range(K - 1, -1, -1):
        lo, hi = int(off[k]), int(off[k + 1])
        C[:, np.arange(lo, hi), np.arange(lo, hi)] += 1.0
        rest = np.r_[0:lo, C.shape[1] - 1]
        P = C[:, lo:hi, lo:hi]
        B = C[:, lo:hi][:, :, rest]
        Pinv[k] = np.linalg.inv(P)
        G[k] = Pinv[k] @ B
        if k > 0:
            M = C[:, rest][:, :, rest] - B.transpose(0, 2, 1) @ G[k]
            C = _sum_into(M, parents[k - 1], sizes[k - 1])
    # back-substitution and the covariances along each node's chain of ancestors
    u: list[FloatArray] = []
    S_chain = None
    covs: list[FloatArray | None] = []
    for k in range(K):
        rhs = G[k][:, :, -1]
        Ga = G[k][:, :, :-1]
        if k == 0:
            u.append(rhs)
            S_jj = Pinv[0]
            S_chain = Pinv[0]
        else:
            up = parents[k - 1]
            anc = np.concatenate([u[a][_ancestor(parents, k, a)] for a in range(k)], axis=1)
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
        covs.append(sigma**2 * Ts[k] @ S_jj @ Ts[k].T if cond_var else None)
    out: list[TermModes] = [TermModes(np.empty(0), None)] * len(prep.terms)
    for k, lv in enumerate(levels):
        b = u[k] @ Ts[k].T
        at = 0
        for t in lv:
            sl = slice(at, at + t.q)
            cov = covs[k][:, sl, sl] if cond_var else None
            out[index[id(t)]] = TermModes(b[:, sl], cov)
            at += t.q
    return out


def _ancestor(parents: list[IntArray], k: int, level: int) -> IntArray:
    """The ancestor at ``level`` of each node of level ``k``."""
    idx = np.arange(parents[k - 1].size)
    for j in range(k, level, -1):
        idx = parents[j - 1][idx]
    return idx


def _sparse(problem, theta, terms: list[TermSpec], r: FloatArray, thetas, sigma: float, cond_var):
    """Any grouping: sparse Z Lambda, SuperLU for the modes, dense inverse for the blocks."""
    n = r.size
    mats, lams, offsets = [], [], [0]
    for t, th in zip(terms, thetas, strict=True):
        rows = np.repeat(np.arange(n), t.q)
        cols = (t.codes[:, None] * t.q + np.arange(t.q)).ravel()
        mats.append(sp.csr_matrix((t.Z.ravel(), (rows, cols)), shape=(n, t.nlevels * t.q)))
        lams.append(sp.kron(sp.identity(t.nlevels), sp.csr_matrix(t.cov.factor(th))))
        offsets.append(offsets[-1] + t.nlevels * t.q)
    ZL = (sp.hstack(mats) @ sp.block_diag(lams)).tocsc()
    Q = ZL.shape[1]
    P = (ZL.T @ ZL + sp.identity(Q)).tocsc()
    u = splu(P).solve(ZL.T @ r)
    Lam = sp.block_diag(lams).tocsr()
    b = Lam @ u
    covs: list[FloatArray | None] = [None] * len(terms)
    if cond_var:
        if Q <= DENSE_LIMIT:
            Pi = np.linalg.inv(P.toarray())
            for k, (t, th) in enumerate(zip(terms, thetas, strict=True)):
                T = t.cov.factor(th)
                idx = offsets[k] + np.arange(t.nlevels)[:, None] * t.q + np.arange(t.q)
                blocks = Pi[idx[:, :, None], idx[:, None, :]]
                covs[k] = sigma**2 * T @ blocks @ T.T
        elif hasattr(problem, "conditional_modes"):
            sds = problem.conditional_modes(np.asarray(theta))
            for k, (_, sd) in enumerate(sds):
                covs[k] = np.apply_along_axis(np.diag, 1, (sigma * sd) ** 2)
        else:
            raise ValueError(
                f"conditional variances of this design need the inverse of a {Q:,} x {Q:,} "
                f"matrix (more than {DENSE_LIMIT:,} random effects in crossed terms); ask for "
                "ranef(cond_var=False)"
            )
    return [
        TermModes(b[offsets[k] : offsets[k + 1]].reshape(t.nlevels, t.q), covs[k])
        for k, t in enumerate(terms)
    ]
