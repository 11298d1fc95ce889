"""The analytic gradient of the Laplace deviance (canonical links), on the tree or any structure.

With ``D(theta, beta) = sum d_i + |u|^2 + log det A + const`` at the conditional modes ``u``:

* the penalized deviance ``P = sum d_i + |u|^2`` is stationary in ``u`` (envelope theorem): its
  derivative is ``-2 s' d eta / dp`` at fixed ``u`` (``s`` the score in ``eta``);
* ``log det A`` (``A = Lambda' Z' W Z Lambda + I``) changes through ``Lambda`` directly and through
  the weights ``W(eta)``, whose ``eta`` moves with the parameter and with the modes:
  ``d u / dp = A^{-1} dF/dp`` for the mode equation ``F = Lambda' Z' s - u = 0`` (for a canonical
  link ``-dF/du = A``, so the factor PIRLS left behind serves). The trace
  ``tr(A^{-1} dA)`` needs only ``A^{-1}`` over each innermost group's chain of ancestors, which the
  tree gives by Takahashi's recursion (`tiers.engine.glmm_tree.TreeSystem.chain_theta`).

For any other structure (crossed factors, slopes) the trace needs ``A^{-1}`` on the pairs of
columns that share a row of ``Z``: the dense inverse where ``A`` is factored densely, or the
blocks of the inverse of the Schur-complement form (`tiers.engine.glmm_sparse.SparseSystem.
inverse_entries`); the sparse LU has no such read-off, and there the gradient is by differences.

Cost on the tree: one pass over the groups for the chains, and one solve and a few passes over
the rows; otherwise one inverse of the dense (or Schur) factor, one solve and passes over the
rows. Madsen & Thyregod (2011, ch. 5) and Bates et al. (2015, sec. 5) give the pieces.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from tiers.engine.glmm_sparse import DENSE_MAX, SparseSystem
from tiers.engine.glmm_tree import TreeSystem
from tiers.engine.pirls import Glmm, Modes

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Links whose observed and expected information agree (-ds/deta = W).
CANONICAL = {("binomial", "logit"), ("poisson", "log")}


def has_gradient(problem: Glmm) -> bool:
    """The analytic gradient applies: nested intercepts (the tree) and a canonical link."""
    fam = problem.family
    return isinstance(problem.system, TreeSystem) and (fam.name, fam.link) in CANONICAL


def _canonical_parts(problem: Glmm, mu: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The GLM weights ``W``, their derivative in ``eta`` and the score, for a canonical link."""
    wt = problem.wt
    if problem.family.name == "binomial":
        W = wt * mu * (1.0 - mu)
        return W, W * (1.0 - 2.0 * mu), wt * (problem.y - mu)
    return mu, mu, problem.y - mu


def laplace_gradient(problem: Glmm, modes: Modes) -> FloatArray:
    """The gradient of the Laplace deviance over ``(theta, beta)`` at the modes just computed.

    ``modes`` must be the last `Glmm.modes` result (the system still holds its factor).
    """
    sysm = problem.system
    assert isinstance(sysm, TreeSystem)
    u = modes.u
    W, dW, s = _canonical_parts(problem, modes.mu)
    K = sysm.K
    leaf = sysm.leaf
    # (innermost groups, K): A^{-1} over the chain times theta, and each row's leverage
    # z' Lambda A^{-1} Lambda' z
    St, lev = sysm.chain_theta()
    h = lev[leaf]
    wh = dW * h
    # adjoint: wh' Z Lambda A^{-1} dF = a' dF with a = A^{-1} Lambda' Z' wh, one solve for all
    a = sysm.solve(sysm.zlt(wh))
    wza = W * sysm.zl(a)
    # every theta_k term is a sum over rows of c_i u_k[group of i]: one aggregation per level
    c_sums = sysm.sums(-2.0 * s + wh - wza)
    s_sums = sysm.sums(s)
    direct = 2.0 * (np.bincount(leaf, W, minlength=St.shape[0]) @ St)
    grad = np.empty(K + problem.p)
    for k in range(K):
        lo, hi = int(sysm.offsets[k]), int(sysm.offsets[k + 1])
        grad[k] = float(u[lo:hi] @ c_sums[k]) + direct[k] + float(a[lo:hi] @ s_sums[k])
    X = problem.X
    grad[K:] = -2.0 * (s @ X) + wh @ X - wza @ X
    return grad


def has_sparse_gradient(problem: Glmm) -> bool:
    """Whether `sparse_laplace_gradient` applies.

    It needs a canonical link and ``A`` factored densely or in its Schur-complement form (not by
    the sparse LU, which gives no entries of the inverse).
    """
    fam = problem.family
    sysm = problem.system
    return (
        isinstance(sysm, SparseSystem)
        and (fam.name, fam.link) in CANONICAL
        and (sysm.r <= DENSE_MAX or sysm.schur_first)
    )


def _row_pattern(sysm: SparseSystem) -> tuple[IntArray, FloatArray, list[slice]]:
    """Per row, its columns of ``Z`` (n, m), ``z' Lambda`` on them (n, m), each term's slice."""
    cols, zeta, blocks, at = [], [], [], 0
    for k, (t, T) in enumerate(zip(sysm.terms, sysm.lambda_blocks(), strict=True)):
        base = sysm.offsets[k] + t.codes.astype(np.int64) * t.q
        cols.append(base[:, None] + np.arange(t.q)[None, :])
        zeta.append(t.Z @ T)
        blocks.append(slice(at, at + t.q))
        at += t.q
    return np.concatenate(cols, axis=1), np.concatenate(zeta, axis=1), blocks


def sparse_laplace_gradient(problem: Glmm, modes: Modes) -> FloatArray:
    """The gradient of the Laplace deviance over ``(theta, beta)`` for any random structure.

    The same terms as `laplace_gradient`, with ``A^{-1}`` read on the pairs of columns that share a
    row of ``Z`` (`SparseSystem.inverse_entries`): the leverage ``h_i = zeta_i' A^{-1} zeta_i``
    (``zeta_i = Lambda' z_i``) and the direct trace ``tr(A^{-1} Lambda' Z' W Z dLambda)``
    ``= sum_i W_i zeta_i' A^{-1} dLambda' z_i``; ``Z dLambda u`` and ``Z dLambda a`` per term from
    ``dT / d theta`` (`tiers.design.covariance.CovStructure.factor_grad`).

    ``modes`` must be the last `Glmm.modes` result (the system still holds its factor).
    """
    sysm = problem.system
    assert isinstance(sysm, SparseSystem)
    W, dW, s = _canonical_parts(problem, modes.mu)
    u = modes.u
    cols, zeta, blocks = _row_pattern(sysm)
    n, m = cols.shape
    ii = np.repeat(cols, m, axis=1).ravel()
    jj = np.tile(cols, (1, m)).ravel()
    E = sysm.inverse_entries(ii, jj).reshape(n, m, m)
    Y = np.einsum("ia,iab->ib", zeta, E)  # zeta_i' A^{-1} on the row's columns
    h = np.einsum("ib,ib->i", Y, zeta)
    wh = dW * h
    a = sysm.solve(sysm.zlt(wh))
    common = -2.0 * s + wh - W * sysm.zl(a)
    grad = np.empty(problem.n_theta + problem.p)
    at = 0
    for k, t in enumerate(sysm.terms):
        lo, hi = sysm.offsets[k], sysm.offsets[k + 1]
        U = u[lo:hi].reshape(t.nlevels, t.q)
        Ak = a[lo:hi].reshape(t.nlevels, t.q)
        codes = t.codes.astype(np.int64)
        theta_k = sysm.theta_values[at : at + t.cov.n_theta]
        for dT in t.cov.factor_grad(theta_k):
            zdt = t.Z @ dT  # z_i' dT: (n, q)
            zdu = np.einsum("ia,ia->i", zdt, U[codes])  # (Z dLambda u)_i = z_i' dT u_g
            zda = np.einsum("ia,ia->i", zdt, Ak[codes])
            trace = float(W @ np.einsum("ib,ib->i", Y[:, blocks[k]], zdt))
            grad[at] = float(common @ zdu) + float(s @ zda) + 2.0 * trace
            at += 1
    grad[at:] = common @ problem.X
    return grad
