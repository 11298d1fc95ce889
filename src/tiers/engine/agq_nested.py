"""Adaptive Gauss-Hermite quadrature for nested random intercepts at every level (melogit's way).

The likelihood of nested scalar intercepts factorises over the tree: a group's integral is over
its own effect, of the product of its children's integrals (Rabe-Hesketh, Skrondal & Pickles
2005). Each level is integrated at ``Q`` points placed by the Laplace approximation's Cholesky
factor of ``A = Lambda' Z' W Z Lambda + I`` (innermost level eliminated first): given its
ancestors' values a group's effect is approximately normal with mean
``u_c - sum_m (l_cm / L_cc)(u_m(node) - u_m)`` and SD ``1 / L_cc``, so the points follow the
ancestors' points (Pinheiro & Chao 2006). With one point per level this is exactly the Laplace
approximation; as ``Q`` grows it converges to the integral.

A group at level ``k`` is evaluated at ``Q^(k+1)`` combinations of its chain's points, and each
row at ``Q^K``: the cost grows as ``n Q^K`` (`MAX_CELLS` bounds it), as in Stata.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from tiers.engine.glmm_tree import TreeSystem
from tiers.errors import DataError

FloatArray = NDArray[np.float64]

#: Rows x points^levels above which the quadrature is refused (about 400 MB of doubles).
MAX_CELLS = 50_000_000


def check_size(n: int, levels: int, nagq: int) -> None:
    """Refuse a quadrature whose work (``n nagq^levels`` cells) is beyond `MAX_CELLS`."""
    cells = n * nagq**levels
    if cells > MAX_CELLS:
        raise DataError(
            f"adaptive quadrature with {nagq} points on {levels} nested levels evaluates "
            f"{n:,} rows at {nagq**levels:,} points each ({cells:,.0f} cells, more than "
            f"{MAX_CELLS:,}): use fewer points (nagq), or nagq=1 (Laplace)"
        )


def nested_agq(
    system: TreeSystem,
    u: FloatArray,
    eta: FloatArray,
    row_loglik: object,
    nagq: int,
) -> float:
    """Minus twice the log-likelihood by nested adaptive quadrature.

    Parameters
    ----------
    system : TreeSystem
        Factored at the conditional modes (as `tiers.engine.pirls.Glmm.modes` leaves it).
    u : array (r,)
        The spherical conditional modes.
    eta : array (n,)
        The linear predictor at the modes.
    row_loglik : callable
        ``row_loglik(eta)`` -> each row's log p(y | eta), for an (n, m) array of predictors.
    nagq : int
        Points per level.
    """
    K, Q = system.K, nagq
    z, w = np.polynomial.hermite_e.hermegauss(Q)
    # log of w_k exp(z_k^2 / 2) / sqrt(2 pi): the standard normal prior is applied at each node
    lw = np.log(w) + 0.5 * z**2 - 0.5 * np.log(2.0 * np.pi)
    offsets = system.offsets
    uhat = [u[offsets[k] : offsets[k + 1]] for k in range(K)]
    nodes: list[FloatArray] = []  # nodes[k]: (n_k, Q^(k+1)) values of u_k at each combination
    for k in range(K):
        piv, ell = system.piv[k], system.lnk[k]
        ncomb = Q ** (k + 1)
        combo = np.arange(ncomb)
        centre = np.repeat(uhat[k][:, None], Q**k, axis=1)
        for m in range(k):
            anc = system.anc[k][m]
            ancestor = nodes[m][anc][:, combo[: Q**k] // Q ** (k - m - 1)]
            centre = centre - (ell[:, m] / piv)[:, None] * (ancestor - uhat[m][anc][:, None])
        own = z[combo % Q][None, :] / piv[:, None]
        nodes.append(np.repeat(centre, Q, axis=1) + own)
    # rows: the predictor at every combination of the leaf chain's points
    last = K - 1
    leaf = system.leaf
    ncomb = Q**K
    combo = np.arange(ncomb)
    shift = np.zeros((system.nleaf, ncomb))
    for m in range(K):
        anc = system.anc[last][m] if m < last else np.arange(system.nleaf)
        shift += system.theta[m] * (
            nodes[m][anc][:, combo // Q ** (last - m)] - uhat[m][anc][:, None]
        )
    eta_c = eta[:, None] + shift[leaf]
    ll_rows = row_loglik(eta_c)  # type: ignore[operator]
    agg = sp.csr_matrix(
        (np.ones(leaf.size), (leaf, np.arange(leaf.size))), shape=(system.nleaf, leaf.size)
    )
    logg = np.asarray(agg @ ll_rows)  # (n_leaf, Q^K): log of the rows' likelihood per leaf
    for k in range(last, -1, -1):
        # integrate level k's own point: log I = -log L_kk + logsumexp_j(lw_j - u^2/2 + log g)
        vals = nodes[k]
        t = (lw[np.arange(vals.shape[1]) % Q][None, :] - 0.5 * vals**2 + logg).reshape(
            vals.shape[0], -1, Q
        )
        top = t.max(axis=2)
        logI = (
            top + np.log(np.exp(t - top[:, :, None]).sum(axis=2)) - np.log(system.piv[k])[:, None]
        )
        if k == 0:
            return float(-2.0 * logI.sum())
        parent = system.anc[k][k - 1]
        up = sp.csr_matrix(
            (np.ones(parent.size), (parent, np.arange(parent.size))),
            shape=(system.sizes[k - 1], parent.size),
        )
        logg = np.asarray(up @ logI)
    raise AssertionError("unreachable")  # pragma: no cover
