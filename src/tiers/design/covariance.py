"""Covariance structures of a random-effects term, parametrised by theta as lme4 does.

A term with ``q`` effects per group (an intercept and slopes) has covariance ``sigma^2 T T'``,
where ``T`` is the relative factor. The engines only need ``T(theta)`` (the likelihood depends on
``T T'`` alone, so any square root will do) and the bounds of theta:

* ``unstructured`` (lme4's ``(x | g)``, Stata's ``covariance(unstructured)``): ``T`` lower
  triangular, its ``q(q+1)/2`` entries in column-major order, diagonal >= 0 (lme4's theta);
* ``independent`` (``(x || g)``, Stata's default): ``T`` diagonal, ``q`` entries >= 0;
* ``identity`` (Stata's ``covariance(identity)``, ``R.factor``): ``T = t I``, one entry >= 0;
* ``exchangeable`` (Stata's): equal variances ``t^2`` and one correlation ``rho`` in
  ``(-1/(q-1), 1)``; theta is ``(t, rho)`` and ``T`` a symmetric square root.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tiers.formula.types import COVARIANCES

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class CovStructure:
    """The parametrisation of one term's relative covariance factor ``T``."""

    kind: str
    q: int

    def __post_init__(self) -> None:
        if self.kind not in COVARIANCES:
            raise ValueError(
                f"unknown covariance structure {self.kind!r}; valid: {', '.join(COVARIANCES)}"
            )

    @property
    def n_theta(self) -> int:
        """Number of parameters."""
        q = self.q
        return {
            "unstructured": q * (q + 1) // 2,
            "independent": q,
            "identity": 1,
            "exchangeable": 2 if q > 1 else 1,
        }[self.kind]

    def lower(self) -> FloatArray:
        """Lower bounds: 0 for diagonal entries and SD ratios, -inf elsewhere.

        For an exchangeable structure, the exchangeable limit replaces -inf.
        """
        q = self.q
        if self.kind == "unstructured":
            return np.array([0.0 if i == j else -np.inf for j in range(q) for i in range(j, q)])
        if self.kind == "exchangeable" and q > 1:
            return np.array([0.0, -1.0 / (q - 1) + 1e-10])
        return np.zeros(self.n_theta)

    def upper(self) -> FloatArray:
        """Upper bounds (only the exchangeable correlation has one)."""
        up = np.full(self.n_theta, np.inf)
        if self.kind == "exchangeable" and self.q > 1:
            up[1] = 1.0 - 1e-10
        return up

    def start(self) -> FloatArray:
        """lme4's start: 1 on the diagonal, 0 off it."""
        q = self.q
        if self.kind == "unstructured":
            return np.array([1.0 if i == j else 0.0 for j in range(q) for i in range(j, q)])
        if self.kind == "exchangeable" and q > 1:
            return np.array([1.0, 0.0])
        return np.ones(self.n_theta)

    def diagonal(self) -> NDArray[np.bool_]:
        """Which parameters are diagonal entries (an SD at zero means a singular fit)."""
        q = self.q
        if self.kind == "unstructured":
            return np.array([i == j for j in range(q) for i in range(j, q)])
        if self.kind == "exchangeable" and q > 1:
            return np.array([True, False])
        return np.ones(self.n_theta, dtype=bool)

    def factor(self, theta: FloatArray) -> FloatArray:
        """The relative factor ``T`` (q x q)."""
        q = self.q
        if self.kind == "unstructured":
            T = np.zeros((q, q))
            idx = 0
            for j in range(q):
                for i in range(j, q):
                    T[i, j] = theta[idx]
                    idx += 1
            return T
        if self.kind == "independent":
            return np.diag(np.asarray(theta, dtype=np.float64))
        if self.kind == "identity":
            return float(theta[0]) * np.eye(q)
        t = float(theta[0])
        if q == 1:
            return np.array([[t]])
        rho = float(theta[1])
        # Sigma/t^2 = (1 - rho) I + rho J has eigenvalues 1 + (q-1) rho (on 1) and 1 - rho.
        ones = np.full((q, q), 1.0 / q)
        root = np.sqrt(max(1.0 + (q - 1) * rho, 0.0)) * ones + np.sqrt(max(1.0 - rho, 0.0)) * (
            np.eye(q) - ones
        )
        return t * root

    def factor_grad(self, theta: FloatArray) -> FloatArray:
        """``dT / d theta_j`` for each parameter, as (n_theta, q, q)."""
        q, n = self.q, self.n_theta
        out = np.zeros((n, q, q))
        if self.kind == "unstructured":
            idx = 0
            for j in range(q):
                for i in range(j, q):
                    out[idx, i, j] = 1.0
                    idx += 1
        elif self.kind == "independent":
            for j in range(q):
                out[j, j, j] = 1.0
        elif self.kind == "identity":
            out[0] = np.eye(q)
        else:  # exchangeable: T is linear in t, and smooth in rho (central differences)
            theta = np.asarray(theta, dtype=np.float64)
            out[0] = self.factor(np.r_[1.0, theta[1:]])
            if n > 1:
                h = 1e-6
                out[1] = (self.factor(theta + [0.0, h]) - self.factor(theta - [0.0, h])) / (2 * h)
        return out

    def covariance(self, theta: FloatArray) -> FloatArray:
        """``T T'``: the covariance of the term's effects relative to sigma^2."""
        T = self.factor(theta)
        return T @ T.T

    def param_names(self, znames: tuple[str, ...]) -> list[str]:
        """lme4-style names of theta's entries (``(Intercept)``, ``Days.(Intercept)``, ``Days``)."""
        q = self.q
        if self.kind == "unstructured":
            return [
                znames[i] if i == j else f"{znames[i]}.{znames[j]}"
                for j in range(q)
                for i in range(j, q)
            ]
        if self.kind == "independent":
            return list(znames)
        if self.kind == "identity":
            return ["identity"]
        return ["sd_ratio", "rho"] if q > 1 else ["sd_ratio"]
