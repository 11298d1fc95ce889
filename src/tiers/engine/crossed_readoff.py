"""The crossed engine's read-off: conditional modes and conditional SDs of the random effects.

At theta, ``S`` is factored again (`tiers.engine.crossed.CrossedProblem`'s elimination), the modes
solve with it, and the conditional variances read ``Lambda_r S^-1 Lambda_r'`` at the coupled pairs
and the diagonal (the first term's through the pairs' quadratic forms, ``Q_j = N_j' X N_j``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from tiers.engine import crossed_blocks as cb

if TYPE_CHECKING:
    from tiers.engine.crossed import CrossedProblem

FloatArray = NDArray[np.float64]


def conditional_sds(
    problem: CrossedProblem, theta: FloatArray
) -> list[tuple[FloatArray, FloatArray]]:
    """`tiers.engine.crossed.CrossedProblem.conditional_sds` (its docstring)."""
    theta = np.asarray(theta, dtype=np.float64)
    ev = problem._eliminate(theta, False)  # S factored at theta (the memo may not be)
    _, T, Binv, _ = problem._state
    T1 = T[0]
    w = np.append(-ev.beta, 1.0)
    rhs1 = np.einsum("sa,js->ja", T1, problem.Z1D @ w)  # T1' Z1'r per level
    z1 = np.einsum("jab,jb->ja", Binv, rhs1)
    out_sorted: list[tuple[FloatArray, FloatArray]] = []
    if problem.rest is None:
        u1 = z1
        var1 = Binv
    else:
        rhs_r = cb.lam_t(T[1:], problem.blocks, (problem.ZrD @ w)[:, None])[:, 0]
        Lz1 = (z1 @ T1.T).reshape(-1)
        rr = rhs_r - cb.lam_t(T[1:], problem.blocks, (problem.N @ Lz1)[:, None])[:, 0]
        ur = problem.rest.solve(rr[:, None])[:, 0]
        back = (problem.NT @ cb.lam(T[1:], problem.blocks, ur[:, None])[:, 0]).reshape(
            problem.n1, problem.q1
        )
        u1 = np.einsum("jab,jb->ja", Binv, rhs1 - back @ T1)
        # conditional variances: X = Lambda_r S^-1 Lambda_r' at the pairs and the diagonal
        cp = problem.coupling
        rows = np.concatenate([cp.rows, np.arange(problem.r)])
        cols = np.concatenate([cp.cols, np.arange(problem.r)])
        X_at = problem.rest.inverse_at(rows, cols, T[1:])
        Q = cp.quadratic(X_at[: cp.rows.size], problem.n1)
        M = np.einsum("jab,sb,jst,tc,jcd->jad", Binv, T1, Q, T1, Binv, optimize=True)
        var1 = Binv + M
        xdiag = X_at[cp.rows.size :]
        br = cb.lam(T[1:], problem.blocks, ur[:, None])[:, 0]
        for b in problem.blocks:
            sl = slice(b.offset, b.stop)
            out_sorted.append(
                (br[sl].reshape(b.nlevels, b.q), np.sqrt(xdiag[sl]).reshape(b.nlevels, b.q))
            )
    b1 = u1 @ T1.T
    v1 = np.einsum("sa,jab,tb->jst", T1, var1, T1)
    sd1 = np.sqrt(np.diagonal(v1, axis1=1, axis2=2))
    out_sorted.insert(0, (b1, sd1))
    out: list[tuple[FloatArray, FloatArray]] = [out_sorted[0]] * len(problem.order)
    for i, k in enumerate(problem.order):
        out[k] = out_sorted[i]
    return out
