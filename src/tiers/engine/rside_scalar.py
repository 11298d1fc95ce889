"""Nested random intercepts on whitened data: the elimination pass, with its gradient in theta.

After whitening (`tiers.engine.rside`) an innermost group ``g`` enters only through
``c_g = (1' R_g^-1 1, 1' R_g^-1 [X y])``: its intercept's whitened column ``v = R_g^-1 1`` is also
the whitened column of every ancestor's intercept within the group. The elimination of
`tiers.engine.nested_scalar` then applies with ``1' R_g^-1 1`` in place of the group size:
level by level, innermost first, with ``t_k = theta_k^2`` and ``s_j = 1 + t_k c_j0``,

    ldL2 += log s_j,     G += (t_k / s_j) c_jr c_jr',     c_parent += c_j / s_j,

and ``A = [X y]' R^-1 [X y] - G``. The derivatives in ``t`` are carried forward along the same
pass (as in `tiers.engine.nested_scalar`): a node holds ``c`` and ``dc / dt_j`` for the deeper
levels ``j``, and moving up a level is one sparse sum.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def sum_matrix(key: IntArray, nkeys: int) -> sp.csr_matrix:
    """The (nkeys, len(key)) 0/1 matrix that sums rows by ``key``."""
    n = key.size
    return sp.csr_matrix((np.ones(n), (key, np.arange(n))), shape=(nkeys, n))


def eliminate(
    leaf: FloatArray,
    dtd: FloatArray,
    t: FloatArray,
    up: list[sp.csr_matrix],
    *,
    gradient: bool,
) -> tuple[FloatArray, float, FloatArray | None, FloatArray | None]:
    """``A``, ``ldL2`` and (with ``gradient``) their derivatives in ``t``.

    Parameters
    ----------
    leaf : array (groups, p + 2)
        Per innermost group ``(1' R^-1 1, 1' R^-1 [X y])``.
    dtd : array (p + 1, p + 1)
        ``[X y]' R^-1 [X y]``.
    t : array (K,)
        ``theta^2``, outermost level first.
    up : list of sparse matrices
        ``up[k - 1]`` sums the nodes of level k into their parents at level k - 1.
    gradient : bool

    Returns
    -------
    A, ldL2, dA (K, p + 1, p + 1) or None, dldL2 (K,) or None
    """
    K = t.size
    m1 = leaf.shape[1]
    m = m1 - 1
    G = np.zeros((m, m))
    ld = 0.0
    dG = np.zeros((K, m, m))
    dld = np.zeros(K)
    c = leaf
    dc = np.zeros((leaf.shape[0], 0, m1))  # derivatives along the deeper levels' t
    for k in range(K - 1, -1, -1):
        tk = float(t[k])
        c0, cr = c[:, 0], c[:, 1:]
        s = 1.0 + tk * c0
        w = tk / s
        ld += float(np.log(s).sum())
        G += (cr * w[:, None]).T @ cr
        nd = dc.shape[1]
        ds = tk * dc[:, :, 0]  # (N, nd)
        if gradient:
            inv2 = 1.0 / (s * s)
            dld[k] += float((c0 / s).sum())
            dG[k] += (cr * inv2[:, None]).T @ cr
            if nd:
                dld[k + 1 :] += (ds / s[:, None]).sum(axis=0)
                dw = -tk * ds * inv2[:, None]
                term = np.einsum("nj,na,nb->jab", dw, cr, cr, optimize=True)
                cross = np.einsum("n,nja,nb->jab", w, dc[:, :, 1:], cr, optimize=True)
                dG[k + 1 :] += term + cross + cross.transpose(0, 2, 1)
        if k == 0:
            break
        moved = c / s[:, None]
        if not gradient:
            c = np.asarray(up[k - 1] @ moved)
            continue
        own = -c * (c0 * inv2)[:, None]
        deeper = dc / s[:, None, None] - c[:, None, :] * (ds * inv2[:, None])[:, :, None]
        stacked = np.concatenate([moved[:, None, :], own[:, None, :], deeper], axis=1)
        N = stacked.shape[0]
        agg = np.asarray(up[k - 1] @ stacked.reshape(N, -1)).reshape(-1, nd + 2, m1)
        c, dc = agg[:, 0], agg[:, 1:]
    if not gradient:
        return dtd - G, ld, None, None
    return dtd - G, ld, -dG, dld
