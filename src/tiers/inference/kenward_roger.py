"""Kenward-Roger's adjusted covariance of the fixed effects, denominator df and scaled F tests.

Kenward and Roger (1997), "Small sample inference for fixed effects from restricted maximum
likelihood", Biometrics 53(3), 983-997, with pbkrtest (Halekoh and Hojsgaard 2014, JSS 59(9)) as
the reference implementation. The matrices ``Phi``, ``P_r``, ``Q_rs``, ``T_rs`` and ``R_rs``
come from `tiers.inference.kr_parts` (``Sigma = sigma^2 (Z Lambda Lambda' Z' + I)``, linear in
its covariances, so the paper's ``R_ij`` are zero; precision weights make it ``... + W^-1``, still
linear, and frequency weights are the expanded data) or `tiers.inference.kr_rside` (a residual
structure, with ``R_ij`` where it is not linear: see there for the parametrisation). Then

* ``W = I_E^-1``, the REML expected information being ``I_E[r, s] = (T_rs - 2 tr(Phi Q_rs) +
  tr(Phi P_r Phi P_s)) / 2`` (a pseudo-inverse when its smallest |eigenvalue| is below 1e-10,
  as pbkrtest);
* the adjusted covariance (their eq. 2)
  ``Phi_A = Phi + 2 Phi [sum_rs W_rs (Q_rs - P_r Phi P_s - R_rs / 4)] Phi``;
* for ``H0: L beta = 0`` with ``L`` of rank ``l``: ``Theta = L'(L Phi L')^-1 L``,
  ``A1 = sum_rs W_rs tr(Theta Phi P_r Phi) tr(Theta Phi P_s Phi)``,
  ``A2 = sum_rs W_rs tr(Theta Phi P_r Phi Theta Phi P_s Phi)``, and from them (their section 4)
  ``B``, ``g``, ``c1..c3``, ``E*``, ``V*``, ``rho = V* / (2 E*^2)``, the denominator df
  ``m = 4 + (l + 2) / (l rho - 1)`` and the scale ``lambda = m / (E* (m - 2))``;
  ``F = lambda (L beta)'(L Phi_A L')^-1 (L beta) / l`` is referred to ``F(l, m)``.

For one contrast ``lambda = 1`` and ``m = 2 / A2`` (a Satterthwaite df with the expected
information), so t tests use the adjusted SE and ``m``, as lmerTest's ``ddf = "Kenward-Roger"``.

KR is defined for REML. Like lmerTest (and Stata's ``dfmethod(kroger)``, which requires
``reml``), a fit by ML is refused; pbkrtest instead refits silently by REML, which changes the
estimates being tested: ``result.refit(reml=True)`` does that explicitly. KR corrects the
model-based covariance of a likelihood fit: sampling weights (a pseudo-likelihood) and sandwich
covariances (``vce``) are refused, naming CR2's Satterthwaite df as the small-sample alternative.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from tiers._lazy import stats
from tiers.errors import InferenceError
from tiers.inference.kr_parts import KRParts, kr_parts
from tiers.inference.kr_rside import residual_parts
from tiers.results.result import FitResult

FloatArray = NDArray[np.float64]

#: pbkrtest's threshold on the smallest |eigenvalue| of the expected information below which
#: its pseudo-inverse is used.
COND_TOL = 1e-10


@dataclass(frozen=True)
class KenwardRoger:
    """What KR's tests need: beta, ``Phi``, ``Phi_A``, the ``P_r`` and ``W``.

    Attributes
    ----------
    beta : array (p,)
    vcov : array (p, p)
        ``Phi``, the unadjusted covariance of beta.
    vcov_adj : array (p, p)
        ``Phi_A``, Kenward-Roger's adjusted covariance (pbkrtest's ``vcovAdj``).
    P : array (m, p, p)
    W : array (m, m)
        The inverse expected (REML) information of the variance parameters.
    xnames : tuple of str
    varpar_names : tuple of str
        The linear variance parameters (``var(Subject.Days)``, ..., ``var(Residual)``).
    pseudo_inverse : bool
        The expected information was (near) singular and a pseudo-inverse was used.
    largest_block : int
        Random effects in the largest block that shares observations (the cost's driver).
    """

    method: ClassVar[str] = "Kenward-Roger"

    beta: FloatArray
    vcov: FloatArray
    vcov_adj: FloatArray
    P: FloatArray
    W: FloatArray
    xnames: tuple[str, ...]
    varpar_names: tuple[str, ...]
    pseudo_inverse: bool
    largest_block: int

    @classmethod
    def from_result(cls, res: FitResult) -> KenwardRoger:
        """KR at a REML fit's estimates.

        Raises
        ------
        InferenceError
            The fit is by ML, by pseudo-likelihood (sampling weights) or reports a sandwich
            covariance (``vce``), or the design links too many random effects
            (`tiers.inference.kr_parts.MAX_BLOCK`).
        """
        _check_model_based(res)
        if not res.reml:
            raise InferenceError(
                "Kenward-Roger's method is defined for REML fits and this model was fitted by "
                "ML: refit it by REML (result.refit(reml=True), or fit without --ml), or use "
                "ddf='satterthwaite'"
            )
        design, rw = res.design, res.design.weights
        X, theta = np.asarray(res.X), np.asarray(res.theta)
        if design.residuals is not None:
            parts = residual_parts(list(design.terms), X, theta, res.sigma, design.residuals)
        elif rw is not None:
            # Sigma = sigma^2 (Z Lambda Lambda' Z' + W^-1): rows scaled by sqrt(w) give the
            # unweighted algebra (KR's parts are invariant to that congruence)
            sw = np.sqrt(np.asarray(rw.rows))
            terms = [dataclasses.replace(t, Z=t.Z * sw[:, None]) for t in design.terms]
            extra = float(np.sum(rw.rows)) - sw.size if rw.frequency else 0.0
            parts = kr_parts(terms, X * sw[:, None], theta, res.sigma, replicates=extra)
        else:
            parts = kr_parts(list(design.terms), X, theta, res.sigma)
        return cls.from_parts(np.asarray(res.beta), parts, tuple(res.xnames))

    @classmethod
    def from_parts(cls, beta: FloatArray, parts: KRParts, xnames: tuple[str, ...]) -> KenwardRoger:
        """W and ``Phi_A`` from the parts (`tiers.inference.kr_parts.KRParts`)."""
        phi, P, Q, T = parts.phi, parts.P, parts.Q, parts.T
        m = P.shape[0]
        PhiP = phi @ P  # (m, p, p)
        info = np.empty((m, m))
        for r in range(m):
            for s in range(r, m):
                info[r, s] = info[s, r] = (
                    T[r, s] - 2.0 * np.sum(phi * Q[r, s].T) + np.sum(PhiP[r] * PhiP[s].T)
                )
        # ``info`` is twice the REML expected information (pbkrtest's IE2), so W = I_E^-1
        smallest = float(np.min(np.abs(np.linalg.eigvalsh(info))))
        pseudo = smallest <= COND_TOL
        W = 2.0 * (np.linalg.pinv(info, hermitian=True) if pseudo else np.linalg.inv(info))
        W = 0.5 * (W + W.T)
        U = np.zeros_like(phi)
        for r in range(m):
            for s in range(m):
                U += W[r, s] * (Q[r, s] - P[r] @ phi @ P[s])
                if parts.R is not None:
                    U -= 0.25 * W[r, s] * parts.R[r, s]
        adj = phi + 2.0 * phi @ U @ phi
        adj = 0.5 * (adj + adj.T)
        return cls(beta, phi, adj, P, W, xnames, parts.names, pseudo, parts.largest_block)

    # ------------------------------------------------------------------------------- tests --

    def _a1_a2(self, L: FloatArray) -> tuple[float, float]:
        """KR's ``A1`` and ``A2`` of the rows of ``L`` (with the unadjusted ``Phi``)."""
        phi = self.vcov
        Theta = L.T @ np.linalg.solve(L @ phi @ L.T, L)
        TP = Theta @ phi
        u = np.einsum("ij,rjk,kl->ril", TP, self.P, phi)  # Theta Phi P_r Phi
        tr = np.einsum("rii->r", u)
        A1 = float(tr @ self.W @ tr)
        A2 = float(np.einsum("rs,rij,sji->", self.W, u, u))
        return A1, A2

    def ddf(self, L: FloatArray) -> tuple[float, float]:
        """The denominator df ``m`` and the F scale ``lambda`` of ``L beta = 0`` (rows of ``L``).

        ``L`` must have full row rank.
        """
        L = np.atleast_2d(np.asarray(L, dtype=np.float64))
        q = L.shape[0]
        A1, A2 = self._a1_a2(L)
        if A2 <= 1e-14 * max(1.0, abs(A1)):  # the contrast does not depend on the variances
            return np.inf, 1.0
        B = (A1 + 6.0 * A2) / (2.0 * q)
        g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
        den = 3.0 * q + 2.0 * (1.0 - g)
        c1, c2, c3 = g / den, (q - g) / den, (q + 2 - g) / den
        v0 = 1.0 + c1 * B
        v0 = 0.0 if abs(v0) < 1e-10 else v0
        v1, v2 = 1.0 - c2 * B, 1.0 - c3 * B
        e_inv = 1.0 - A2 / q  # 1 / E*
        ratio = 1.0 if abs(e_inv) < 1e-14 and abs(v1) < 1e-14 else e_inv / v1
        rho = ratio**2 * v0 / (v2 * q)  # V* / (2 E*^2)
        m = 4.0 + (q + 2.0) / (q * rho - 1.0)
        # pbkrtest leaves F unscaled when m is within 0.01 of 2 (lambda's pole)
        scale = 1.0 if abs(m - 2.0) < 0.01 else m * e_inv / (m - 2.0)
        return m, scale

    def df(self, L: FloatArray) -> float:
        """KR's df of the contrast ``L'beta`` (a vector)."""
        return self.ddf(np.asarray(L, dtype=np.float64)[None, :])[0]

    def contest1d(self, L: FloatArray) -> tuple[float, float, float, float, float]:
        """Estimate, adjusted SE, df, t and two-sided p of ``L'beta``."""
        L = np.asarray(L, dtype=np.float64)
        est = float(L @ self.beta)
        se = float(np.sqrt(L @ self.vcov_adj @ L))
        df = self.df(L)
        t = est / se
        return est, se, df, t, float(2.0 * stats.t.sf(abs(t), df))

    def contest(self, L: FloatArray) -> tuple[float, int, float, float]:
        """Scaled F, numerator df, denominator df and p of ``L beta = 0`` (rows of ``L``).

        Rows that are linear combinations of the others are dropped first (the test is of the
        row space, as pbkrtest's rank).
        """
        L = np.atleast_2d(np.asarray(L, dtype=np.float64))
        L = _row_basis(L)
        q = L.shape[0]
        m, scale = self.ddf(L)
        Lb = L @ self.beta
        wald = float(Lb @ np.linalg.solve(L @ self.vcov_adj @ L.T, Lb))
        F = scale * wald / q
        return F, q, m, float(stats.f.sf(F, q, m))


def _check_model_based(res: FitResult) -> None:
    """Refuse KR where the covariance of beta is not the model's (sampling weights, ``vce``)."""
    rw = res.design.weights
    rob = res.robust
    if rw is not None and rw.sampling:
        raise InferenceError(sampling_refusal())
    if rob is not None and rob.kind == "cr2":
        raise InferenceError(
            "this fit reports CR2 standard errors (vce='cr2'), not the model-based covariance "
            "that Kenward-Roger's method corrects; its small-sample t tests use CR2's own "
            "Satterthwaite df: coef_table(ddf='satterthwaite') (or result.satterthwaite())"
        )
    if rob is not None:
        raise InferenceError(
            "Kenward-Roger's df are not available: this fit reports sandwich (vce robust) "
            "standard errors, not the model's. For small-sample t tests with few clusters fit "
            "with vce='cr2' (the bias-reduced CR2 covariance with Satterthwaite df, Bell and "
            "McCaffrey 2002) and use coef_table(ddf='satterthwaite'), or use Wald z tests "
            "(ddf='normal')"
        )


def sampling_refusal() -> str:
    """Why KR is refused with sampling weights, and what is supported instead."""
    return (
        "Kenward-Roger's method corrects the model-based covariance of a REML fit; a "
        "sampling-weighted fit maximises a pseudo-likelihood (by ML) and its covariance is a "
        "sandwich, for which KR is not defined. Use Wald z tests with the sandwich SEs "
        "(ddf='normal', as Stata's mixed with pweights); CR2 with Satterthwaite df (vce='cr2') "
        "is available for fits without sampling weights"
    )


def _row_basis(L: FloatArray) -> FloatArray:
    """Independent rows spanning the rows of ``L`` (itself when it has full row rank)."""
    rank = np.linalg.matrix_rank(L)
    if rank == L.shape[0]:
        return L
    _, _, Vt = np.linalg.svd(L, full_matrices=False)
    return Vt[:rank]
