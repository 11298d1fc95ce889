"""Penalized iteratively reweighted least squares and the Laplace / adaptive quadrature objective.

At fixed ``(theta, beta)`` the conditional modes ``u`` of the spherical random effects minimise the
penalized deviance ``sum d_i(y_i, mu_i) + |u|^2`` with ``eta = offset + X beta + Z Lambda u``
(Bates et al. 2015, sec. 5.2; lme4's ``pwrssUpdate`` with ``nAGQ > 0``). Each step solves
``(Lambda' Z' W Z Lambda + I) delta = Lambda' Z' W r - u`` (``W`` the GLM weights, ``r`` the working
residual), halving it until the penalized deviance falls.

The Laplace approximation to minus twice the log-likelihood is then (lme4's ``devfun`` for
``nAGQ = 1``)::

    -2 log L(theta, beta) ~= sum -2 log p(y_i | u) + |u|^2 + log det(Lambda' Z' W Z Lambda + I)

and for one scalar random effect adaptive Gauss-Hermite quadrature integrates each group's factor
exactly at ``nagq`` points centred at its mode and scaled by its conditional SD (Pinheiro & Bates
1995; Liu & Pierce 1994); one point is the Laplace approximation. Both keep the binomial
coefficients and ``log y!`` in the likelihood, so they are comparable across ``nAGQ`` (lme4's
``nAGQ > 1`` deviance omits the saturated model's part: see `Glmm.saturated`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tiers.engine.agq_nested import nested_agq
from tiers.engine.glm_family import Family
from tiers.engine.glmm_sparse import RandomSystem
from tiers.engine.glmm_tree import TreeSystem

FloatArray = NDArray[np.float64]

#: PIRLS stops when the penalized deviance changes by less than this, relative (lme4 uses 1e-7
#: on a scaled increment; the deviance at the reference theta is compared at 1e-8, so tighter).
PIRLS_TOL = 1e-12
PIRLS_MAXIT = 60
#: ... and when the step on u is below this: the Laplace objective's log-determinant is
#: first-order in u, so u itself must converge, not only the (flat at the mode) penalized deviance.
U_TOL = 1e-9
#: For a canonical link PIRLS is Newton's method on the penalized deviance (observed = expected
#: information), so a full step below this leaves an error of its square (~1e-12).
NEWTON_TOL = 1e-6
#: Where factoring ``A`` costs much more than a solve (`RandomSystem.costly_factor`), once a
#: Newton step is below `CHORD_FROM` the next steps reuse its factor (the chord, or simplified
#: Newton, method: Kelley 1995, sec. 5.4) while they contract by at least `CHORD_RATE`; they stop
#: when the error left, ``size rate / (1 - rate)``, is below `CHORD_TOL`. ``A`` is factored again
#: at the modes for the log-determinant either way.
CHORD_FROM = 0.1
CHORD_RATE = 0.25
CHORD_TOL = 1e-10


class PirlsError(ArithmeticError):
    """PIRLS did not converge at some (theta, beta); the optimizer treats it as an infinite value."""


@dataclass(frozen=True, slots=True)
class Modes:
    """The conditional modes at one ``(theta, beta)`` and what is read off with them."""

    u: FloatArray
    mu: FloatArray
    eta: FloatArray
    minus2loglik: float
    logdet: float
    iterations: int


class Glmm:
    """A GLMM's Laplace / quadrature objective as a function of ``(theta, beta)``.

    Parameters
    ----------
    y : array (n,)
        The proportion of successes (binomial) or the count (Poisson).
    wt : array (n,)
        Prior weights: binomial trials (1 for a 0/1 outcome); ones for Poisson.
    offset : array (n,)
    X : array (n, p)
    system : RandomSystem
        The random-effects part (`tiers.engine.glmm_sparse.SparseSystem` or the tree).
    family : Family
    """

    def __init__(
        self,
        y: FloatArray,
        wt: FloatArray,
        offset: FloatArray,
        X: FloatArray,
        system: RandomSystem,
        family: Family,
    ) -> None:
        self.y, self.wt, self.offset, self.X = y, wt, offset, X
        self.system = system
        self.family = family
        self.n, self.p = X.shape
        self.n_theta = system.n_theta
        self._u = np.zeros(system.r)
        self._theta: FloatArray | None = None
        self._factored = False
        self.saturated = float(np.sum(family.saturated(y, wt)))
        # canonical links: sum d_i = 2 sum wt (b(eta) - y eta) + const, with b the cumulant
        # (softplus for logit, exp for log): one transcendental per row instead of two logs
        self._canonical = (family.name, family.link) in (("binomial", "logit"), ("poisson", "log"))
        self._unit = bool(np.all(wt == 1.0))
        self._wy = wt * y
        if self._canonical:
            zero = np.zeros_like(y)
            self._dev_const = (
                float(np.sum(family.dev_resid(y, family.linkinv(zero), wt))) - self._dev_mu(zero)[0]
            )

    # -- the inner iteration ---------------------------------------------------------------
    def _dev_mu(self, eta: FloatArray) -> tuple[float, FloatArray]:
        """The deviance (canonical links: up to `_dev_const`) and mu at ``eta``.

        For the logit link softplus(eta) = max(eta, 0) + log1p(e) and mu = 1 / (1 + e) or
        e / (1 + e) by the sign of eta, with ``e = exp(-|eta|)``: one exponential serves both
        (numpy's ``logaddexp`` alone costs three times as much) and neither overflows.
        """
        fam = self.family
        if not self._canonical:
            mu = fam.linkinv(eta)
            return float(np.sum(fam.dev_resid(self.y, mu, self.wt))), mu
        if fam.name == "binomial":
            # in place: at millions of rows each fresh n-vector costs as much as a pass
            e = np.abs(eta)
            if self._unit:  # sum max(eta, 0) = (sum eta + sum |eta|) / 2
                bsum = 0.5 * (float(np.sum(eta)) + float(np.sum(e)))
            else:
                bsum = float(self.wt @ np.maximum(eta, 0.0))
            np.negative(e, out=e)
            np.exp(e, out=e)
            mu = np.log1p(e)
            bsum += float(np.sum(mu)) if self._unit else float(self.wt @ mu)
            np.add(e, 1.0, out=mu)
            np.reciprocal(mu, out=mu)
            np.multiply(mu, e, out=mu, where=eta < 0.0)  # e / (1 + e), exact for small e
        else:
            mu = np.exp(np.minimum(eta, 700.0))
            bsum = float(np.sum(mu)) if self._unit else float(self.wt @ mu)
        return 2.0 * (bsum - float(self._wy @ eta)), mu

    def _score_weights(self, eta: FloatArray, mu: FloatArray) -> tuple[FloatArray, FloatArray]:
        """The score ``W (y - mu) / (d mu / d eta)`` and the GLM weights ``W``."""
        fam = self.family
        if self._canonical:  # d mu / d eta = V(mu): the score is wt (y - mu), W = wt V(mu)
            if fam.name == "binomial":
                w = mu * (1.0 - mu)
                if not self._unit:
                    w *= self.wt
                return self._wy - (mu if self._unit else self.wt * mu), w
            return self._wy - mu, mu
        d = fam.mu_eta(eta)
        w = self.wt * d * d / fam.variance(mu)
        return w * (self.y - mu) / d, w

    def modes(self, theta: FloatArray, beta: FloatArray, *, warm: bool = True) -> Modes:
        """PIRLS at ``(theta, beta)``: the conditional modes and the Laplace parts.

        A warm start keeps the previous evaluation's random effects ``b = Lambda u`` (not ``u``:
        when theta moves, ``b`` and so ``eta`` stay close to the new mode, and PIRLS starts
        where it ended).

        Raises
        ------
        PirlsError
            No decrease of the penalized deviance or no convergence in `PIRLS_MAXIT` steps.
        """
        sysm = self.system
        theta = np.asarray(theta, dtype=np.float64)
        u = self._u if warm else np.zeros(sysm.r)
        if self._theta is None or not np.array_equal(theta, self._theta):
            old = self._theta
            sysm.set_theta(theta)
            self._theta = theta.copy()
            if warm and old is not None:
                u = sysm.carry(u, old)
        eta0 = self.offset + self.X @ beta
        eta = eta0 + sysm.zl(u)
        dev, mu = self._dev_mu(eta)
        pdev = dev + float(u @ u)
        if not np.isfinite(pdev):
            u = np.zeros(sysm.r)
            eta = eta0.copy()
            dev, mu = self._dev_mu(eta)
            pdev = dev + float(u @ u)
        steps = 0
        chord = getattr(sysm, "costly_factor", False) and self._canonical
        # the factor left by the previous evaluation (at nearby theta and beta late in the
        # optimisation) serves the first chord steps; a step that is large or contracts slowly
        # brings a new one
        refactor, prev = not (chord and self._factored), np.inf
        self._factored = False
        for it in range(1, PIRLS_MAXIT + 1):
            steps = it
            score, w = self._score_weights(eta, mu)
            newton = refactor
            if newton:
                sysm.factor(w)
            delta = sysm.solve(sysm.zlt(score) - u)
            zd = sysm.zl(delta)
            step = 1.0
            for _ in range(30):
                u_new = u + step * delta
                eta_new = eta + step * zd
                dev_new, mu_new = self._dev_mu(eta_new)
                pdev_new = dev_new + float(u_new @ u_new)
                # the deviance of a canonical link is a difference of sums (cumulant minus
                # y eta): near a separated fit its rounding is ~1e-16 of those sums, not of pdev
                if pdev_new <= pdev + 1e-10 * (abs(pdev) + 1.0):
                    break
                step *= 0.5
            else:
                if not newton:  # a stale factor: take a Newton step instead
                    refactor = True
                    continue
                raise PirlsError("the penalized deviance does not decrease along the PIRLS step")
            change = pdev - pdev_new
            u, eta, mu, pdev = u_new, eta_new, mu_new, pdev_new
            size = float(np.max(np.abs(delta), initial=0.0))
            first = not np.isfinite(prev)
            rate = size / prev if prev > 0 and not first else 1.0
            prev = size
            if step == 1.0 and self._canonical:
                if newton and size <= NEWTON_TOL:
                    break  # PIRLS is Newton's method here: the error after this step is ~size^2
                if not newton and rate <= CHORD_RATE and size * rate / (1 - rate) <= CHORD_TOL:
                    break  # the chord steps contract by `rate`: what remains is ~size rate
            if change <= PIRLS_TOL * (abs(pdev) + 0.1) and step == 1.0 and size <= U_TOL:
                break
            # keep the factor while the chord steps contract fast (the weights barely move)
            refactor = not (
                chord
                and self._canonical
                and step == 1.0
                and size <= CHORD_FROM
                and (newton or first or rate <= CHORD_RATE)
            )
        else:
            raise PirlsError(f"PIRLS did not converge in {PIRLS_MAXIT} steps")
        _, w = self._score_weights(eta, mu)
        sysm.factor(w)
        self._factored = True
        self._u = u
        # -2 log p(y | u) is the deviance plus the saturated model's -2 log L (no log-gamma here)
        dev = pdev - float(u @ u)
        if self._canonical:
            dev += self._dev_const
        return Modes(u, mu, eta, dev + self.saturated, sysm.logdet(), steps)

    # -- the objectives ---------------------------------------------------------------------
    def laplace(self, theta: FloatArray, beta: FloatArray) -> float:
        """The Laplace approximation to -2 log-likelihood at ``(theta, beta)``."""
        m = self.modes(theta, beta)
        return m.minus2loglik + float(m.u @ m.u) + m.logdet

    def _row_loglik(self, eta: FloatArray) -> FloatArray:
        """Each row's log p(y | eta) for an (n, m) array of predictors."""
        mu = self.family.linkinv(eta)
        return -0.5 * self.family.minus2loglik(self.y[:, None], mu, self.wt[:, None])

    def agq(self, theta: FloatArray, beta: FloatArray, nagq: int) -> float:
        """Adaptive Gauss-Hermite quadrature with ``nagq`` points.

        For nested random intercepts see `tiers.engine.agq_nested`; for one scalar term:

        Each group's integral ``int exp(-g_j(u)/2) du / sqrt(2 pi)``, ``g_j`` its rows' -2 log p
        plus ``u^2``, is taken at ``u_j + s_j z_k`` (``s_j`` the conditional SD at the mode).
        """
        if nagq == 1 and not self.system.scalar_single:
            return self.laplace(theta, beta)
        if isinstance(self.system, TreeSystem) and self.system.K > 1:
            m = self.modes(theta, beta)
            return nested_agq(self.system, m.u, m.eta, self._row_loglik, nagq)
        if not self.system.scalar_single:
            raise ValueError("adaptive quadrature needs one scalar effect or nested intercepts")
        m = self.modes(theta, beta)
        sysm = self.system
        term = sysm.terms[0]
        codes = term.codes.astype(np.int64)
        zcol = term.Z[:, 0] * sysm.lambda_blocks()[0][0, 0]
        s = np.sqrt(sysm.cond_var()[0][:, 0, 0])
        z, wts = np.polynomial.hermite_e.hermegauss(nagq)
        eta0 = m.eta - zcol * m.u[codes]
        rows0 = self.family.minus2loglik(self.y, m.mu, self.wt)
        g0 = np.bincount(codes, rows0, minlength=s.size) + m.u**2
        terms = np.empty((nagq, s.size))
        for k in range(nagq):
            uk = m.u + s * z[k]
            mu = self.family.linkinv(eta0 + zcol * uk[codes])
            rows = self.family.minus2loglik(self.y, mu, self.wt)
            gk = np.bincount(codes, rows, minlength=s.size) + uk**2
            terms[k] = np.log(wts[k]) + 0.5 * z[k] ** 2 - 0.5 * (gk - g0)
        top = terms.max(axis=0)
        logsum = top + np.log(np.exp(terms - top).sum(axis=0))
        return float(np.sum(g0 - 2.0 * (np.log(s) - 0.5 * np.log(2 * np.pi) + logsum)))


def glm_irls(
    y: FloatArray, wt: FloatArray, offset: FloatArray, X: FloatArray, family: Family
) -> tuple[FloatArray, float, bool]:
    """The GLM without random effects by iteratively reweighted least squares.

    Returns beta, minus twice the log-likelihood and whether it converged. The start is R's
    ``glm`` start (``mustart = (wt y + 0.5) / (wt + 1)`` for the binomial, ``y + 0.1`` for Poisson).
    """
    mu = (wt * y + 0.5) / (wt + 1.0) if family.name == "binomial" else y + 0.1
    eta = family.linkfun(mu)
    dev_old = np.inf
    beta = np.zeros(X.shape[1])
    converged = False
    for _ in range(100):
        mu = family.linkinv(eta)
        d = family.mu_eta(eta)
        w = wt * d * d / family.variance(mu)
        z = eta - offset + (y - mu) / d
        sw = np.sqrt(w)
        beta_new, *_ = np.linalg.lstsq(X * sw[:, None], z * sw, rcond=None)
        step = 1.0
        for _ in range(30):
            cand = beta + step * (beta_new - beta) if np.isfinite(dev_old) else beta_new
            eta_c = offset + X @ cand
            dev = float(np.sum(family.dev_resid(y, family.linkinv(eta_c), wt)))
            if dev <= dev_old or not np.isfinite(dev_old):
                break
            step *= 0.5
        beta, eta = np.asarray(cand, dtype=np.float64), eta_c
        if abs(dev_old - dev) < 1e-12 * (abs(dev) + 0.1):
            converged = True
            break
        dev_old = dev
    mu = family.linkinv(eta)
    return beta, float(np.sum(family.minus2loglik(y, mu, wt))), converged
