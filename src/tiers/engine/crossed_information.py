"""The average-information Hessian of the crossed engine's criterion, in log theta.

For random intercepts the marginal covariance is ``V = sigma^2 I + sum_k phi_k Z_k Z_k'`` with
``phi_k = sigma^2 theta_k^2``. The Hessian of ``-2 log L`` (ML with beta profiled, or REML) in the
variance components is ``-tr(P V_k P V_l) + 2 y'P V_k P V_l P y`` (the trace term is
``tr(V^-1 V_k V^-1 V_l)`` for ML); averaging it with its expectation leaves the *data* term
``y'P V_k P V_l P y`` (Gilmour, Thompson and Cullis 1995, Biometrics 51, 1440-1450), which needs
no trace: only the projections ``P x`` of the working variates ``x_k = phi_k V_k P y``. Since
``V P y = y - X beta`` and ``Z_k' P y = b_k / phi_k``, the working variates are the fitted
effects ``x_k = Z_k b_k`` (and ``x_e = y - X beta - Z b``), and ``sigma^2 x'P x`` is the
downdated cross-product of the columns ``[X y x_1 .. x_K]`` reduced by ``X``: the same
elimination as ``[X y]``'s, with ``Z'x_k = (Z'Z)_{.k} b_k`` read off the stored cross-products
(no pass over the rows).

In ``psi = (log theta_1 .. log theta_K, log sigma)`` the chain rule gives
``H_psi = J' AI J`` plus the gradient's terms (``phi_k`` is ``exp(2 psi_0 + 2 psi_k)``), and the
profile over ``sigma`` is the Schur complement on ``psi_0``:

    H_kl = 4 M_kl + 2 g_k [k = l] - (4 m_k + 2 g_k)(4 m_l + 2 g_l) / (4 nu)

with ``M_kl = x_k'P x_l``, ``m_k = x_k'P y``, ``nu = y'P y`` (``n - p`` or ``n``) and ``g`` the
criterion's gradient in log theta. At InstEval's optimum its eigenvalues relative to the exact
Hessian are 0.97-1.00 (1.07-1.11 at the moment start), so Newton steps on it converge nearly as
fast as exact Newton's, for the price of one solve with ``K + 1`` right-hand sides
(`tiers.optimize.scoring`). It is an approximation: the optimum is where the exact gradient
vanishes, whatever the Hessian used to get there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from tiers.engine.crossed import CrossedProblem

FloatArray = NDArray[np.float64]


def working_gram(problem: CrossedProblem, b1: FloatArray, br: FloatArray) -> FloatArray:
    """``sigma^2 [y x_1 .. x_K]' P [y x_1 .. x_K]`` for the working variates ``x_k = Z_k b_k``.

    Parameters
    ----------
    problem : CrossedProblem
        Intercept-only terms, factored at the current theta (``S`` not yet inverted).
    b1, br : arrays (nlevels1,), (r,)
        The conditional modes ``Lambda u`` of the first and of the rest terms (sorted order).
    """
    K = len(problem.order)
    p1 = problem.p + 1
    c = problem.C1[:, 0, 0]
    Z1D = problem.Z1D[:, 0, :]
    # Z'x, [X y]'x and x'x from the stored cross-products: Z_1'x_1 = C b_1, Z_r'x_1 = N b_1,
    # Z_1'x_k = N_k' b_k, Z_r'x_k = (Z_r'Z_r)_{.k} b_k
    Z1X = np.empty((problem.n1, K))
    Z1X[:, 0] = c * b1
    DX = np.empty((p1, K))
    DX[:, 0] = Z1D.T @ b1
    XX = np.empty((K, K))
    XX[0, 0] = b1 @ (c * b1)
    ZrW = None
    if K > 1:
        # one column per rest term: its modes in its block, zeros elsewhere
        Br = np.zeros((problem.r, K - 1))
        for i, blk in enumerate(problem.blocks):
            Br[blk.offset : blk.stop, i] = br[blk.offset : blk.stop]
        Nb1 = problem.N @ b1
        ZrBr = np.asarray(problem.zrzr @ Br)
        Z1X[:, 1:] = problem.NT @ Br
        DX[:, 1:] = problem.ZrD.T @ Br
        XX[0, 1:] = XX[1:, 0] = Nb1 @ Br
        XX[1:, 1:] = Br.T @ ZrBr
        ZrW = np.column_stack([problem.ZrD, Nb1, ZrBr])
    WtW = np.block([[problem.dtd, DX], [DX.T, XX]])
    Z1W = np.concatenate([Z1D, Z1X], axis=1)[:, None, :]
    A, _ = problem.downdate(Z1W, ZrW, WtW)
    # reduced by X: sigma^2 [y x]'P [y x]
    p = problem.p
    G = A[p:, p:] - A[p:, :p] @ np.linalg.solve(A[:p, :p], A[:p, p:])
    return np.asarray(0.5 * (G + G.T), dtype=np.float64)


def log_theta_hessian(G: FloatArray, g_log: FloatArray, nu: float) -> FloatArray:
    """The average-information Hessian of the profiled criterion in log theta.

    Parameters
    ----------
    G : array (K + 1, K + 1)
        `working_gram` (its ``[0, 0]`` entry is the penalised RSS).
    g_log : array (K,)
        The criterion's gradient in log theta, in the order of ``G``'s working variates.
    nu : float
        ``n - p`` (REML) or ``n`` (ML): ``sigma^2 = pwrss / nu`` and ``y'P y = nu``.
    """
    sigma2 = G[0, 0] / nu
    M = G[1:, 1:] / sigma2
    h0 = 4.0 * G[0, 1:] / sigma2 + 2.0 * g_log
    H = 4.0 * M + np.diag(2.0 * g_log) - np.outer(h0, h0) / (4.0 * nu)
    return np.asarray(0.5 * (H + H.T), dtype=np.float64)
