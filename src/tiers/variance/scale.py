"""The variance parameters on the data scale, as lme4 names and orders them.

Per term its SDs and correlations (lme4's ``"sdcor"`` scale), then the residual SD ``sigma``.

Profile and bootstrap intervals and the information matrix are on this scale; `SdCor` maps it to
and from ``(theta, sigma)``; the objective at ``(theta, sigma)``, beta profiled out and sigma not,
is the engine's ``criterion`` (`tiers.engine.gaussian.criterion_value`).

Names are lme4's (``confint(fit, oldNames = FALSE)``): ``sd_(Intercept)|Subject``,
``cor_Days.(Intercept)|Subject``, ``sigma``. Within a term the order is lme4's, column-major over
the lower triangle: ``sd_1, cor_21, ..., sd_2, ...``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tiers.design.covariance import CovStructure

FloatArray = NDArray[np.float64]


def sd_corr(cov: CovStructure, theta_t: FloatArray, sigma: float) -> tuple[FloatArray, FloatArray]:
    """SDs (q,) and correlation matrix (q, q) of a term's effects on the data scale."""
    S = cov.covariance(theta_t) * sigma**2
    sd = np.sqrt(np.clip(np.diag(S), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        R = S / np.outer(sd, sd)
    R[~np.isfinite(R)] = 0.0
    np.fill_diagonal(R, 1.0)
    return sd, R


def corr_pairs(cov: CovStructure) -> list[tuple[int, int]]:
    """The (row, column) of each correlation the structure has, in lme4's order."""
    if cov.kind == "unstructured":
        return [(i, j) for j in range(cov.q) for i in range(j + 1, cov.q)]
    if cov.kind == "exchangeable" and cov.q > 1:
        return [(1, 0)]  # one common correlation
    return []


def n_sd(cov: CovStructure) -> int:
    """Number of distinct SDs of a term (one for identity and exchangeable structures)."""
    return 1 if cov.kind in ("identity", "exchangeable") else cov.q


def theta_from(cov: CovStructure, sds: FloatArray, corrs: FloatArray, sigma: float) -> FloatArray:
    """Theta of one term from its SDs and correlations on the data scale."""
    q = cov.q
    if cov.kind == "identity":
        return np.array([sds[0] / sigma])
    if cov.kind == "independent":
        return sds / sigma
    if cov.kind == "exchangeable":
        return np.array([sds[0] / sigma, corrs[0]]) if q > 1 else np.array([sds[0] / sigma])
    R = np.eye(q)
    for (i, j), r in zip(corr_pairs(cov), corrs, strict=True):
        R[i, j] = R[j, i] = r
    S = np.outer(sds, sds) * R / sigma**2
    try:
        T = np.linalg.cholesky(S)
    except np.linalg.LinAlgError:
        w, V = np.linalg.eigh(S)
        _, T = np.linalg.qr((V * np.sqrt(np.clip(w, 0.0, None))).T)
        T = T.T
        T *= np.sign(np.diag(T) + (np.diag(T) == 0))
    return np.array([T[i, j] for j in range(q) for i in range(j, q)])


@dataclass(frozen=True)
class _Block:
    cov: CovStructure
    theta: slice
    sd_at: tuple[int, ...]  # positions in p of the term's SDs (effect order)
    cor_at: tuple[int, ...]  # positions of its correlations (varparams' pair order)


@dataclass(frozen=True)
class SdCor:
    """The map between ``(theta, sigma)`` and the named SD/correlation vector ``p``.

    Attributes
    ----------
    names : tuple of str
        lme4's names, ``sigma`` last.
    kinds : tuple of str
        ``"sd"``, ``"cor"`` or ``"sigma"`` per entry.
    groups : tuple of str
        The grouping factor of each entry (``"Residual"`` for sigma).
    """

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    groups: tuple[str, ...]
    blocks: tuple[_Block, ...]
    n_theta: int

    @classmethod
    def from_terms(cls, terms: Sequence) -> SdCor:
        """From `tiers.design.design.TermInfo` values (theta order)."""
        names: list[str] = []
        kinds: list[str] = []
        groups: list[str] = []
        blocks = []
        n_theta = 0
        for t in terms:
            cov = CovStructure(t.covariance, t.q)
            nsd = n_sd(cov)
            pairs = corr_pairs(cov)
            z = list(t.znames) if nsd == cov.q else ["(all)"] * cov.q
            sd_at = [0] * nsd
            cor_at = [0] * len(pairs)
            # lme4's order: column-major over the lower triangle of the SD/correlation matrix
            for j in range(cov.q):
                for i in range(j, cov.q):
                    if i == j and j < nsd:
                        sd_at[j] = len(names)
                        names.append(f"sd_{z[j]}|{t.group}")
                        kinds.append("sd")
                        groups.append(t.group)
                    elif (i, j) in pairs:
                        cor_at[pairs.index((i, j))] = len(names)
                        label = f"{z[i]}.{z[j]}" if nsd == cov.q else "(all)"
                        names.append(f"cor_{label}|{t.group}")
                        kinds.append("cor")
                        groups.append(t.group)
            blocks.append(_Block(cov, slice(t.start, t.stop), tuple(sd_at), tuple(cor_at)))
            n_theta = max(n_theta, t.stop)
        names.append("sigma")
        kinds.append("sigma")
        groups.append("Residual")
        return cls(tuple(names), tuple(kinds), tuple(groups), tuple(blocks), n_theta)

    @property
    def size(self) -> int:
        """Number of variance parameters (sigma included)."""
        return len(self.names)

    def from_theta(self, theta: FloatArray, sigma: float) -> FloatArray:
        """``p`` at ``(theta, sigma)``."""
        p = np.empty(self.size)
        for b in self.blocks:
            sd, R = sd_corr(b.cov, np.asarray(theta[b.theta]), sigma)
            p[list(b.sd_at)] = sd[: len(b.sd_at)]
            for k, (i, j) in enumerate(corr_pairs(b.cov)):
                p[b.cor_at[k]] = R[i, j]
        p[-1] = sigma
        return p

    def to_theta(self, p: FloatArray) -> tuple[FloatArray, float]:
        """``(theta, sigma)`` at ``p``."""
        sigma = float(p[-1])
        theta = np.empty(self.n_theta)
        for b in self.blocks:
            sds = np.asarray(p[list(b.sd_at)], dtype=np.float64)
            cors = np.clip(np.asarray(p[list(b.cor_at)], dtype=np.float64), -1.0, 1.0)
            theta[b.theta] = theta_from(b.cov, sds, cors, sigma)
        return theta, sigma

    def min_eigenvalue(self, p: FloatArray) -> float:
        """The smallest eigenvalue of the terms' correlation matrices at ``p`` (1 without any).

        Negative where ``p``'s correlations do not form a valid correlation matrix.
        """
        worst = 1.0
        for b in self.blocks:
            if len(b.cor_at) == 0 or b.cov.kind != "unstructured":
                continue
            R = np.eye(b.cov.q)
            for (i, j), r in zip(corr_pairs(b.cov), p[list(b.cor_at)], strict=True):
                R[i, j] = R[j, i] = r
            worst = min(worst, float(np.linalg.eigvalsh(R)[0]))
        return worst

    def feasible(self, p: FloatArray, keep: int, margin: float = 1e-3) -> FloatArray:
        """``p`` made valid: its other correlations shrunk until every matrix is definite.

        The correlations other than entry ``keep`` are multiplied by 0.9, 0.8, ..., 0 until every
        term's correlation matrix has its smallest eigenvalue at least ``margin``.
        """
        cor = [k for k, kind in enumerate(self.kinds) if kind == "cor" and k != keep]
        out = np.array(p, dtype=np.float64)
        for s in np.linspace(1.0, 0.0, 11):
            out[cor] = s * np.asarray(p)[cor]
            if not cor or self.min_eigenvalue(out) >= margin:
                return out
        return out

    def theta_bounds(self) -> tuple[FloatArray, FloatArray]:
        """Lower and upper bounds of theta."""
        lo = np.concatenate([b.cov.lower() for b in self.blocks])
        hi = np.concatenate([b.cov.upper() for b in self.blocks])
        return lo, hi
