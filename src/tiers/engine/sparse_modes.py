"""Conditional modes and covariances for any grouping (the crossed engine's read-off).

``Z Lambda`` is assembled as a sparse matrix and ``P = Lambda' Z' Z Lambda + I`` factored by
SuperLU for the modes ``u = P^-1 Lambda' Z' r``, ``b = Lambda u`` (Bates et al. 2015, eqs. 10-18).
The diagonal blocks of ``sigma^2 Lambda P^-1 Lambda'`` come from a dense inverse when ``P`` has at
most `DENSE_LIMIT` columns, otherwise from the engine's own conditional SDs (no within-group
covariances), or the request is refused with a message.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.sparse.linalg import splu

from tiers.design.terms import TermSpec
from tiers.engine.contract import TermModes

FloatArray = NDArray[np.float64]

#: Largest number of random effects for which the conditional covariances of crossed designs are
#: computed from a dense inverse (about 1 s and 200 MB at the limit).
DENSE_LIMIT = 5000


def sparse_modes(
    terms: list[TermSpec],
    thetas: list[FloatArray],
    r: FloatArray,
    sigma: float,
    cond_var: bool,
    conditional_sds: Callable[[], list[tuple[FloatArray, FloatArray]]] | None = None,
) -> list[TermModes]:
    """Modes and conditional covariance blocks of every term, for any grouping.

    Parameters
    ----------
    terms : list of TermSpec
        In theta order; ``thetas`` their parameters.
    r : array (n,)
        ``y - X beta``.
    conditional_sds : callable, optional
        The engine's conditional SDs (relative scale, per term) for designs with more than
        `DENSE_LIMIT` random effects.
    """
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
        elif conditional_sds is not None:
            for k, (_, sd) in enumerate(conditional_sds()):
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
