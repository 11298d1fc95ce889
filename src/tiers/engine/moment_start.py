"""A start for theta from moments, for crossed random intercepts and balanced nested ones.

For ``K`` random intercepts, the U-statistics of Gao and Owen (2017, "Efficient moment
calculations for variance components in large unbalanced crossed random effects models", EJS 11)
give the variance components in one pass over the rows: within the levels of factor ``k``,

    U_k = sum_g N_g sum_{i in g} (r_i - rbar_g)^2,
    E U_k = s_e^2 (S_k - N) + sum_{l != k} s_l^2 (S_k - C_kl),

and over all rows ``U_0 = N sum_i (r_i - rbar)^2``, ``E U_0 = s_e^2 (N^2 - N) + sum_l s_l^2
(N^2 - S_l)``, where ``S_k = sum_g N_g^2`` and ``C_kl`` counts the ordered pairs of rows that share
their levels of both ``k`` and ``l``. Started there rather than at lme4's ``theta = 1``, the
optimiser needs fewer evaluations of a criterion that costs a dense factorisation each (InstEval:
32 -> 19 evaluations).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from tiers.design.grouping import Codes, combined_key

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Smallest start: the criterion is even in each intercept's theta, so its gradient at 0 is 0 and
#: an optimiser started there would not move.
THETA_FLOOR = 0.1


def _pair_count(codes: IntArray) -> float:
    counts = np.bincount(codes).astype(np.float64)
    return float(counts @ counts)


def moment_variances(
    r: FloatArray, codes: list[Codes], shared: FloatArray | None = None
) -> FloatArray | None:
    """``(s_1^2, ..., s_K^2, s_e^2)`` from the residuals ``r``; None when not identified.

    ``shared`` (K x K), when given, holds the ``C_kl`` off its diagonal (a caller that has the
    cells' counts already: the crossed engine's ``Z'Z`` for intercepts of ones).
    """
    n = float(r.size)
    K = len(codes)
    S = np.array([_pair_count(c) for c in codes])
    if shared is None:
        C = np.zeros((K, K))
        for k in range(K):
            for m in range(k):
                keys = combined_key(codes[k], int(codes[m].max()) + 1, codes[m])
                C[k, m] = C[m, k] = _pair_count(np.unique(keys, return_inverse=True)[1])
    else:
        C = shared
    A = np.zeros((K + 1, K + 1))
    u = np.zeros(K + 1)
    for k, ck in enumerate(codes):
        nk = np.bincount(ck).astype(np.float64)
        sk = np.bincount(ck, weights=r)
        ssk = np.bincount(ck, weights=r * r)
        with np.errstate(invalid="ignore", divide="ignore"):
            u[k] = float(nk @ np.where(nk > 0, ssk - sk * sk / nk, 0.0))
        A[k, K] = S[k] - n
        A[k, :K] = np.where(np.arange(K) == k, 0.0, S[k] - C[k])
    u[K] = n * float(((r - r.mean()) ** 2).sum())
    A[K, :K] = n * n - S
    A[K, K] = n * n - n
    if np.linalg.cond(A) > 1e12:
        return None
    return np.asarray(np.linalg.solve(A, u), dtype=np.float64)


def ols_residuals(D: FloatArray, dtd: FloatArray) -> FloatArray | None:
    """``y - X beta`` by the normal equations, from ``D = [X y]`` and ``D'D``; None if singular.

    A start needs no QR (``lstsq`` took 1.8 ms of InstEval's set-up); ``D`` may be shifted about
    its means where ``X`` holds an intercept, which leaves the residuals as they are.
    """
    p = dtd.shape[0] - 1
    try:
        beta = np.linalg.solve(dtd[:p, :p], dtd[:p, p])
    except np.linalg.LinAlgError:
        return None
    return np.asarray(D[:, p] - D[:, :p] @ beta, dtype=np.float64)


def moment_theta(
    y: FloatArray,
    X: FloatArray,
    codes: list[Codes],
    shared: FloatArray | None = None,
    residuals: FloatArray | None = None,
) -> FloatArray | None:
    """``theta_k = s_k / s_e`` from OLS residuals, floored at `THETA_FLOOR`; None if unavailable.

    ``shared`` as in `moment_variances`; ``residuals``: the OLS residuals when the caller has them
    (`ols_residuals`).
    """
    r = residuals
    if r is None:
        r = y - X @ np.linalg.lstsq(X, y, rcond=None)[0]
    v = moment_variances(r, [np.asarray(c, dtype=np.int64) for c in codes], shared)
    if v is None or not np.all(np.isfinite(v)) or v[-1] <= 0.0:
        return None
    return np.maximum(np.sqrt(np.maximum(v[:-1], 0.0) / v[-1]), THETA_FLOOR)


def nested_anova_theta(
    dtd: FloatArray, colsum: FloatArray, n: float, levels: list[tuple[float, float, FloatArray]]
) -> FloatArray | None:
    """``theta_k = s_k / s_e`` from the ANOVA of a balanced nested design; None if unavailable.

    The classical estimator of balanced nested random intercepts (Searle, Casella and McCulloch
    1992, "Variance Components", section 4.4), on the OLS residuals ``r = y - X beta``: with
    ``m_k`` rows in every node of level ``k`` (outermost first), ``N_k`` nodes, node sums
    ``T_kj`` of ``r`` and ``Q_k = sum_j T_kj^2 / m_k`` (the rows are a last level with
    ``m = 1``), the mean square of level ``k`` is ``(Q_k - Q_k-1) / (N_k - N_k-1)`` and
    ``E MS_k = s_e^2 + sum_{l >= k} m_l s_l^2``. Everything is read off the cross-products the
    nested engine keeps: ``sum_j T_kj^2 = c' Graw_k c`` and ``sum r^2 = c' D'D c`` with
    ``c = (-beta, 1)``, so the start costs no pass over the data. At the REML optimum when
    every estimate is positive and X is the intercept alone; close to it otherwise.

    Parameters
    ----------
    dtd, colsum : arrays
        ``D'D`` and the column sums of ``D = [X y]`` (about any shift that keeps an intercept
        column of ones).
    n : float
        Rows.
    levels : list of (m_k, N_k, Graw_k)
        Outermost first: rows per node, nodes, ``sum_j S_j S_j'`` of the nodes' sums of ``D``.
    """
    p = dtd.shape[0] - 1
    try:
        beta = np.linalg.solve(dtd[:p, :p], dtd[:p, p])
    except np.linalg.LinAlgError:
        return None
    c = np.append(-beta, 1.0)
    sizes = [m for m, _, _ in levels] + [1.0]
    nodes = [N for _, N, _ in levels] + [n]
    q = [float(c @ g @ c) / m for m, _, g in levels] + [float(c @ dtd @ c)]
    q_prev, n_prev = float(c @ colsum) ** 2 / n, 1.0
    ms = []
    for qk, nk in zip(q, nodes, strict=True):
        if nk <= n_prev:
            return None
        ms.append((qk - q_prev) / (nk - n_prev))
        q_prev, n_prev = qk, nk
    s2 = ms[-1]
    if not (np.isfinite(s2) and s2 > 0.0):
        return None
    var = np.array([(ms[k] - ms[k + 1]) / sizes[k] for k in range(len(levels))])
    if not np.all(np.isfinite(var)):
        return None
    return np.maximum(np.sqrt(np.maximum(var, 0.0) / s2), THETA_FLOOR)
