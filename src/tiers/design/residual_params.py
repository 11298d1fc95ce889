"""The residual structure's parameters: their unconstrained scale, natural values and blocks R_g.

The residuals of one residual group have covariance ``sigma^2 R_g`` with ``R_g = S_g C_g S_g``
(``C_g`` a correlation matrix, ``S_g`` a diagonal of SD ratios, 1 for the reference stratum or the
first occasion). The optimizer works on an unconstrained vector ``rho`` (nlme's practice, which also
puts the Wald intervals on a scale where they respect the bounds):

* AR(1): ``phi = tanh(rho)`` (Fisher's z; nlme's ``log((1 + phi) / (1 - phi))`` is ``2 rho``);
* CAR(1): ``phi = 1 / (1 + exp(-rho))`` (nlme's logit);
* Toeplitz of order k (Stata's ``toeplitz #``): lag correlations ``r = x / (1 + mu(x))`` with
  ``mu(x) = max(0, -lambda_min(T(x)))``, ``T(x)`` the m x m banded Toeplitz matrix with zero
  diagonal and ``x_h`` on lag h (m the occasions from a group's earliest to its latest time). As
  ``mu`` is positively homogeneous, along each ray ``x = s d`` this maps ``s`` in [0, inf)
  one-to-one onto [0, 1 / mu(d)) of the ray ``r = s' d``, whose end is where ``I + T(r)``
  stops being positive definite: a one-to-one map of R^k onto the Toeplitz correlations whose
  m x m matrix is positive definite (a convex set around 0), with Jacobian I at 0;
* banded of order k (Stata's ``banded #``): the correlations of occasion pairs at most k apart,
  by the same map with ``T(x)`` the occasions' matrix holding ``x`` on those pairs; SD ratios per
  occasion as unstructured;
* MA of order k: partial autocorrelations ``tanh(rho)`` give, by the Durbin-Levinson
  recursion, the coefficients of an invertible moving average of order k (Jones 1980, as nlme's
  ``corARMA``), whose lag correlations ``r_h = sum_j psi_j psi_(j+h) / sum_j psi_j^2``
  (``psi = (1, theta_1..theta_k)``) are the structure's, 0 beyond lag k;
* exchangeable: ``r = (e^rho - 1) / (e^rho + m - 1)`` for groups of at most ``m`` residuals, the
  ratio of the eigenvalues of ``C_g`` on its log scale (nlme's ``log((r + 1/(m-1)) / (1 - r))``
  plus the constant ``log(m - 1)``), so ``rho = 0`` is ``r = 0`` and the bounds ``-1/(m-1) < r <
  1`` keep every ``C_g`` positive definite;
* unstructured: canonical partial correlations ``z = tanh(rho)`` (Lewandowski, Kurowicka and Joe
  2009): ``C = L L'`` with ``L_ij = z_ij sqrt(1 - sum_{k<j} L_ik^2)``, a one-to-one map onto the
  correlation matrices;
* SD ratios: ``log``.

A linear change of an unconstrained scale leaves Wald intervals unchanged, so intervals on these
scales equal nlme's ``intervals()`` for AR(1), CAR(1), exchangeable and the SD ratios.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tiers.formula.residuals import ResidualStructure

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

#: The unconstrained value standing for CAR(1)'s phi = 0 (its boundary): phi = 1e-13.
CAR1_NULL = -30.0


@dataclass(frozen=True)
class ResidualParams:
    """Where each residual parameter sits in ``rho`` and how it maps to its natural value.

    Attributes
    ----------
    spec : ResidualStructure
    n_corr : int
        Correlation parameters (first in ``rho``).
    ratio_labels : tuple of str
        The strata (or occasions) with an SD ratio, after the reference (``ratio_reference``).
    ratio_reference : str or None
    max_size : int
        The largest residual group (exchangeable's bound).
    occasions : array or None
        Unstructured: the time values, in order.
    span : int
        Toeplitz: the occasions from a group's earliest to its latest time (the largest lag + 1),
        the size of the matrix that must stay positive definite.
    """

    spec: ResidualStructure
    n_corr: int
    ratio_labels: tuple[str, ...]
    ratio_reference: str | None
    max_size: int
    occasions: FloatArray | None = None
    span: int = 0

    @property
    def n_rho(self) -> int:
        """Number of residual parameters."""
        return self.n_corr + len(self.ratio_labels)

    @property
    def corr_names(self) -> tuple[str, ...]:
        """Names of the correlation parameters (nlme's ``Phi``, ``Rho``; ``cor(t1,t2)``)."""
        kind = self.spec.kind
        if kind in ("ar1", "car1"):
            return ("phi",)
        if kind in ("toeplitz", "ma"):
            return tuple(f"corr lag {h}" for h in range(1, self.n_corr + 1))
        if kind == "exchangeable":
            return ("rho",)
        if kind in ("unstructured", "banded") and self.occasions is not None:
            t = [_label(v) for v in self.occasions]
            return tuple(f"corr({t[i]},{t[j]})" for i, j in self.pairs())
        return ()

    def pairs(self) -> list[tuple[int, int]]:
        """Unstructured and banded: the occasion pairs with a correlation (upper triangle, by row)."""
        T = 0 if self.occasions is None else self.occasions.size
        band = T if self.spec.kind == "unstructured" else self.spec.order
        return [
            (int(i), int(j)) for i, j in zip(*np.triu_indices(T, 1), strict=True) if j - i <= band
        ]

    def _pattern(self) -> IntArray:
        """Toeplitz and banded: the correlation at each entry over the occasions (-1: none)."""
        if self.spec.kind == "toeplitz":
            lag = np.abs(np.subtract.outer(np.arange(self.span), np.arange(self.span)))
            return np.where((lag >= 1) & (lag <= self.n_corr), lag - 1, -1).astype(np.int64)
        T = 0 if self.occasions is None else self.occasions.size
        where = np.full((T, T), -1, dtype=np.int64)
        for k, (i, j) in enumerate(self.pairs()):
            where[i, j] = where[j, i] = k
        return where

    @property
    def names(self) -> tuple[str, ...]:
        """Every residual parameter's name on the natural scale, in ``rho`` order."""
        what = self.spec.time if self.spec.kind in ("unstructured", "banded") else self.spec.by
        ratios = tuple(f"sd ratio {what}={lab}" for lab in self.ratio_labels)
        return self.corr_names + ratios

    @property
    def unconstrained_names(self) -> tuple[str, ...]:
        """Names of the entries of ``rho`` (the optimizer's scale)."""
        corr = {
            "ar1": ("atanh(phi)",),
            "car1": ("logit(phi)",),
            "exchangeable": ("log((1+(m-1)rho)/(1-rho))",),
            "ma": tuple(f"atanh(pacf {h})" for h in range(1, self.n_corr + 1)),
            "toeplitz": tuple(f"lag {h} (radial)" for h in range(1, self.n_corr + 1)),
            "banded": tuple(f"{n} (radial)" for n in self.corr_names),
        }.get(self.spec.kind, tuple(f"cpc {n}" for n in self.corr_names))
        ratios = tuple(f"log({n})" for n in self.names[self.n_corr :])
        return corr[: self.n_corr] + ratios

    def start(self) -> FloatArray:
        """The start: AR(1) phi = 0, CAR(1) phi = 0.5, exchangeable r = 0, equal SDs."""
        return np.zeros(self.n_rho)

    def null(self) -> FloatArray:
        """``rho`` of independent residuals of one variance (the linear model's)."""
        out = np.zeros(self.n_rho)
        if self.spec.kind == "car1":
            out[0] = CAR1_NULL
        return out

    def boundary_null(self) -> tuple[bool, ...]:
        """Per parameter: its independent-residuals value lies on the boundary (CAR(1)'s phi=0)."""
        return tuple(self.spec.kind == "car1" and i == 0 for i in range(self.n_rho))

    def natural(self, rho: FloatArray) -> FloatArray:
        """The parameters on their natural scale (correlations, then SD ratios)."""
        rho = np.asarray(rho, dtype=np.float64)
        return np.concatenate([self.correlations(rho[: self.n_corr]), np.exp(rho[self.n_corr :])])

    def to_rho(self, natural: FloatArray) -> FloatArray:
        """The unconstrained ``rho`` of natural values (the inverse of `natural`).

        For pinning a fit at another program's estimates (nlme's ``coef(..., unconstrained =
        FALSE)``: correlations in nlme's order, then SD ratios).
        """
        natural = np.asarray(natural, dtype=np.float64)
        corr, ratio = natural[: self.n_corr], natural[self.n_corr :]
        kind = self.spec.kind
        if kind == "ar1":
            x = np.arctanh(corr)
        elif kind == "car1":
            x = np.log(corr / (1.0 - corr))
        elif kind == "exchangeable":
            x = np.log((1.0 + (self.max_size - 1.0) * corr) / (1.0 - corr))
        elif kind == "ma":
            x = _ma_rho(corr, self)
        elif kind in ("toeplitz", "banded"):
            x = corr / (1.0 - _gauge(corr, self._pattern()))
        elif kind == "unstructured":
            T = 0 if self.occasions is None else self.occasions.size
            C = np.eye(T)
            C[np.triu_indices(T, 1)] = corr
            C = np.triu(C) + np.triu(C, 1).T
            L = np.linalg.cholesky(C)
            z = np.zeros((T, T))
            for i in range(1, T):
                left = 1.0
                for j in range(i):
                    z[j, i] = L[i, j] / np.sqrt(left)
                    left -= L[i, j] ** 2
            x = np.arctanh(z[np.triu_indices(T, 1)])
        else:
            x = np.zeros(0)
        return np.concatenate([x, np.log(ratio)])

    def correlations(self, x: FloatArray) -> FloatArray:
        """Correlation parameters from their unconstrained values."""
        kind = self.spec.kind
        if kind == "ar1":
            return np.tanh(x)
        if kind == "car1":
            return 1.0 / (1.0 + np.exp(-x))
        if kind == "exchangeable":
            e = np.exp(x)
            return (e - 1.0) / (e + self.max_size - 1.0)
        if kind == "ma":
            return ma_correlations(ma_coefficients(np.tanh(x)))
        if kind in ("toeplitz", "banded"):
            return x / (1.0 + _gauge(x, self._pattern()))
        if kind == "unstructured":
            C = _cpc(x, 0 if self.occasions is None else self.occasions.size)
            return C[np.triu_indices(C.shape[0], 1)]
        return np.zeros(0)

    def blocks(
        self, rho: FloatArray, times: FloatArray, strata: IntArray, occasion: IntArray
    ) -> FloatArray:
        """``R_g`` of the residual groups of one size, as (P, T, T).

        From their (P, T) times, strata and occasions (row order within each group). ``strata``
        index the SD ratios (0 the reference); ``occasion`` indexes the unstructured
        occasions.
        """
        rho = np.asarray(rho, dtype=np.float64)
        x, logr = rho[: self.n_corr], rho[self.n_corr :]
        kind = self.spec.kind
        P, T = times.shape
        if kind in ("ar1", "car1"):
            phi = float(self.correlations(x)[0])
            lag = np.abs(times[:, :, None] - times[:, None, :])
            C = np.power(phi, lag) if phi != 0.0 else (lag == 0).astype(np.float64)
        elif kind in ("toeplitz", "ma"):
            lags = np.concatenate(([1.0], self.correlations(x), [0.0]))
            lag = np.abs(times[:, :, None] - times[:, None, :]).astype(np.int64)
            C = lags[np.minimum(lag, lags.size - 1)]
        elif kind == "exchangeable":
            r = float(self.correlations(x)[0])
            C = np.broadcast_to(np.where(np.eye(T, dtype=bool), 1.0, r), (P, T, T))
        elif kind == "unstructured":
            full = _cpc(x, 0 if self.occasions is None else self.occasions.size)
            C = full[occasion[:, :, None], occasion[:, None, :]]
        elif kind == "banded":
            where = self._pattern()
            full = np.concatenate([self.correlations(x), [0.0]])[where]
            np.fill_diagonal(full, 1.0)
            C = full[occasion[:, :, None], occasion[:, None, :]]
        else:
            C = np.broadcast_to(np.eye(T), (P, T, T))
        if not logr.size:
            return np.array(C)
        ratio = np.exp(np.concatenate(([0.0], logr)))
        d = ratio[occasion] if kind in ("unstructured", "banded") else ratio[strata]
        return C * d[:, :, None] * d[:, None, :]


def ma_coefficients(pacf: FloatArray) -> FloatArray:
    """An invertible moving average's coefficients from partial autocorrelations in (-1, 1).

    The Durbin-Levinson recursion gives a stationary autoregression ``phi``; ``theta = -phi`` has
    the same polynomial, hence invertible (Jones 1980).
    """
    phi = np.zeros(0)
    for m, p in enumerate(pacf, start=1):
        phi = np.concatenate([phi - p * phi[::-1], [p]]) if m > 1 else np.array([p])
    return -phi


def ma_correlations(theta: FloatArray) -> FloatArray:
    """Lag 1..k correlations of the moving average ``e_t = a_t + sum_j theta_j a_(t-j)``."""
    psi = np.concatenate(([1.0], theta))
    k = theta.size
    gamma = np.array([psi[: psi.size - h] @ psi[h:] for h in range(k + 1)])
    return gamma[1:] / gamma[0]


def _gauge(x: FloatArray, where: IntArray) -> float:
    """``max(0, -lambda_min(T(x)))``, ``T(x)`` holding ``x[where]`` (0 where ``where`` is -1).

    ``I + T(r)`` is positive definite exactly when ``_gauge(r) < 1``.
    """
    if where.size == 0 or not np.any(where >= 0):
        return 0.0
    T = np.concatenate([np.asarray(x, dtype=np.float64), [0.0]])[where]
    return max(0.0, -float(np.linalg.eigvalsh(T)[0]))


def _ma_rho(corr: FloatArray, params: ResidualParams) -> FloatArray:
    """Unconstrained values whose lag correlations are ``corr`` (least squares from 0)."""
    from scipy.optimize import least_squares

    fit = least_squares(lambda x: params.correlations(x) - corr, np.zeros(corr.size), xtol=1e-15)
    return np.asarray(fit.x, dtype=np.float64)


def _cpc(x: FloatArray, T: int) -> FloatArray:
    """The correlation matrix of the canonical partial correlations ``tanh(x)`` (upper, by row)."""
    z = np.zeros((T, T))
    z[np.triu_indices(T, 1)] = np.tanh(x)
    L = np.zeros((T, T))
    L[0, 0] = 1.0
    for i in range(1, T):
        left = 1.0
        for j in range(i):
            L[i, j] = z[j, i] * np.sqrt(left)
            left -= L[i, j] ** 2
        L[i, i] = np.sqrt(max(left, 0.0))
    return L @ L.T


def _label(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"
