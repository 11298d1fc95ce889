"""Moment estimates for two crossed random intercepts, with GLS fixed effects by backfitting.

For ``y_i = x_i' beta + a_{g(i)} + b_{h(i)} + e_i`` with ``a ~ N(0, s_a^2)``, ``b ~ N(0, s_b^2)``
and ``e ~ N(0, s_e^2)``, Gao and Owen (2017, "Efficient moment calculations for variance components
in large unbalanced crossed random effects models", Electronic Journal of Statistics 11) match
three U-statistics of the residuals to their expectations, each computed in one pass over the rows:

* ``U_a = sum_g N_g sum_{i in g} (r_i - rbar_g)^2`` (half the squared differences within a level
  of the first factor), ``E U_a = s_e^2 (sum_g N_g^2 - N) + s_b^2 (sum_g N_g^2 - C)``;
* ``U_b``, the same within levels of the second factor, ``E U_b = s_e^2 (sum_h N_h^2 - N) +
  s_a^2 (sum_h N_h^2 - C)``;
* ``U_e = N sum_i (r_i - rbar)^2``, ``E U_e = s_e^2 (N^2 - N) + s_a^2 (N^2 - sum_g N_g^2) +
  s_b^2 (N^2 - sum_h N_h^2)``,

where ``C = sum_cells N_gh^2`` (``N`` when no cell holds two observations). Following Ghosh, Hastie
and Owen (2022, "Backfitting for large scale crossed random effects regressions", Annals of
Statistics 50), the residuals are those of ordinary least squares, and ``beta`` is then the GLS
estimate under the estimated components: ``V^-1 v`` for each column ``v`` of ``[X y]`` comes from
the penalised normal equations for ``(a, b)``, solved by backfitting (alternate closed-form updates
of ``a`` given ``b`` and ``b`` given ``a``: one pass over the rows each). The standard errors of
``beta`` are ``sqrt(diag((X' V^-1 X)^-1))`` at the estimated components. Everything is linear in the
rows; nothing of size levels x levels is formed.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from tiers.design.design import Design
from tiers.engine.moment_start import moment_variances
from tiers.errors import DataError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: Backfitting stops when no fitted effect moves by more than this times the response's SD.
BACKFIT_TOL = 1e-10
BACKFIT_MAX_ITER = 2000


def variance_components(r: FloatArray, ga: IntArray, gb: IntArray) -> tuple[FloatArray, FloatArray]:
    """``(s_a^2, s_b^2, s_e^2)`` (negative ones set to 0) and the unclipped solution."""
    raw = moment_variances(r, [ga, gb])
    if raw is None:
        raise DataError(
            "the moment equations have no unique solution for this design: the two factors "
            "group the rows the same way (or nearly); drop one of them"
        )
    return np.maximum(raw, 0.0), raw


def backfit(
    V: FloatArray,
    ga: IntArray,
    na: int,
    gb: IntArray,
    nb: int,
    lam: tuple[float, float],
) -> tuple[FloatArray, int]:
    """``V - Z_a a - Z_b b`` at the penalised least-squares ``(a, b)``, for each column of ``V``.

    ``lam = (s_e^2 / s_a^2, s_e^2 / s_b^2)``; an infinite one drops that factor. Returns the
    residuals and the number of sweeps.
    """
    n_a = np.bincount(ga, minlength=na).astype(np.float64)
    n_b = np.bincount(gb, minlength=nb).astype(np.float64)
    k = V.shape[1]
    a = np.zeros((na, k))
    b = np.zeros((nb, k))
    scale = max(float(np.abs(V).max()), 1.0)

    def update(
        codes: IntArray, nlev: int, counts: FloatArray, lam_k: float, R: FloatArray
    ) -> FloatArray:
        if not np.isfinite(lam_k):
            return np.zeros((nlev, k))
        sums = np.column_stack([np.bincount(codes, R[:, j], minlength=nlev) for j in range(k)])
        return sums / (counts + lam_k)[:, None]

    for sweep in range(1, BACKFIT_MAX_ITER + 1):
        a_new = update(ga, na, n_a, lam[0], V - b[gb])
        b_new = update(gb, nb, n_b, lam[1], V - a_new[ga])
        moved = max(
            float(np.abs(a_new - a).max(initial=0.0)), float(np.abs(b_new - b).max(initial=0.0))
        )
        a, b = a_new, b_new
        if moved <= BACKFIT_TOL * scale:
            return V - a[ga] - b[gb], sweep
    raise DataError(
        f"backfitting did not converge in {BACKFIT_MAX_ITER} sweeps (largest change {moved:.3g}); "
        "the design may be too close to nested for the moment method"
    )


def two_crossed_intercepts(design: Design) -> tuple[int, int]:
    """Positions of the two intercept terms; refuses any other random part."""
    terms = design.terms
    if len(terms) != 2 or not all(t.intercept_only for t in terms):
        got = " + ".join(f"({' + '.join(t.znames)} | {t.name})" for t in terms)
        raise DataError(
            "the moment method fits two crossed random intercepts, (1 | a) + (1 | b); got "
            f"{got}: fit this model by likelihood (tiers.fit)"
        )
    return 0, 1
