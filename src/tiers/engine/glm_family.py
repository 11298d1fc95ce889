"""GLM families and links as small frozen values: binomial (logit, probit, cloglog), Poisson (log).

A `Family` answers what penalized iteratively reweighted least squares and the Laplace/quadrature
objectives ask (McCullagh & Nelder 1989, ch. 2; lme4's ``glmFamily``): the link and its inverse,
d mu / d eta, the variance function, the deviance residuals and minus twice the log-likelihood.

The binomial response is the proportion ``y = successes / trials`` with prior weights ``trials``
(lme4's convention for ``cbind(s, f)``); the Poisson response is the count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit, gammaln, ndtr, xlogy

from tiers.errors import DataError
from tiers.formula.glm import LINKS

FloatArray = NDArray[np.float64]
FamilyName = Literal["binomial", "poisson"]
LinkName = Literal["logit", "probit", "cloglog", "log"]


#: Residual variance of the latent scale the link implies (logistic pi^2/3, standard normal 1,
#: Gumbel pi^2/6); Nakagawa & Schielzeth (2010), Snijders & Bosker (2012) sec. 17.3.
LATENT_VARIANCE: dict[str, float] = {
    "logit": float(np.pi**2 / 3),
    "probit": 1.0,
    "cloglog": float(np.pi**2 / 6),
}

# keep mu strictly inside (0, 1) / above 0 so that logs and variances stay finite (R's
# binomial()$linkinv clamps at the machine epsilon the same way)
_EPS = float(np.finfo(np.float64).eps)
_ETA_MAX = 700.0


@dataclass(frozen=True, slots=True)
class Family:
    """A GLM family with its link.

    Attributes
    ----------
    name : {"binomial", "poisson"}
    link : {"logit", "probit", "cloglog", "log"}
    """

    name: FamilyName
    link: LinkName

    def __post_init__(self) -> None:
        if self.name not in LINKS:
            raise DataError(
                f"family must be one of {', '.join(map(repr, LINKS))}; got {self.name!r}"
            )
        if self.link not in LINKS[self.name]:
            valid = "; ".join(f"{f}: {', '.join(ls)}" for f, ls in LINKS.items())
            raise DataError(
                f"the {self.name} family has no {self.link!r} link; valid combinations are {valid}"
            )

    @property
    def latent_variance(self) -> float | None:
        """The latent-scale residual variance of a binomial link; None for Poisson."""
        return LATENT_VARIANCE.get(self.link) if self.name == "binomial" else None

    def linkinv(self, eta: FloatArray) -> FloatArray:
        """Mu from the linear predictor."""
        eta = np.clip(eta, -_ETA_MAX, _ETA_MAX)
        if self.link == "logit":
            mu = expit(eta)
        elif self.link == "probit":
            mu = ndtr(eta)
        elif self.link == "cloglog":
            mu = -np.expm1(-np.exp(np.minimum(eta, 30.0)))
        else:
            return np.maximum(np.exp(eta), _EPS)
        return np.clip(mu, _EPS, 1.0 - _EPS)

    def linkfun(self, mu: FloatArray) -> FloatArray:
        """The linear predictor from mu."""
        if self.link == "logit":
            return np.log(mu / (1.0 - mu))
        if self.link == "probit":
            from scipy.special import ndtri

            return np.asarray(ndtri(mu), dtype=np.float64)
        if self.link == "cloglog":
            return np.log(-np.log1p(-mu))
        return np.log(mu)

    def mu_eta(self, eta: FloatArray) -> FloatArray:
        """The derivative d mu / d eta."""
        eta = np.clip(eta, -_ETA_MAX, _ETA_MAX)
        if self.link == "logit":
            p = expit(eta)
            out = p * (1.0 - p)
        elif self.link == "probit":
            out = np.exp(-0.5 * eta * eta) / np.sqrt(2.0 * np.pi)
        elif self.link == "cloglog":
            e = np.exp(np.minimum(eta, 30.0))
            out = e * np.exp(-e)
        else:
            out = np.exp(eta)
        return np.maximum(out, _EPS)

    def variance(self, mu: FloatArray) -> FloatArray:
        """The variance function V(mu)."""
        if self.name == "binomial":
            return mu * (1.0 - mu)
        return mu

    def dev_resid(self, y: FloatArray, mu: FloatArray, wt: FloatArray) -> FloatArray:
        """Squared deviance residuals (each row's contribution to the deviance)."""
        if self.name == "binomial":
            return 2.0 * wt * (xlogy(y, y / mu) + xlogy(1.0 - y, (1.0 - y) / (1.0 - mu)))
        return 2.0 * wt * (xlogy(y, y / mu) - (y - mu))

    def minus2loglik(self, y: FloatArray, mu: FloatArray, wt: FloatArray) -> FloatArray:
        """Each row's -2 log-likelihood (with the binomial coefficient / factorial constants).

        Summed, this is R's ``family$aic`` without the 2 * df term.
        """
        if self.name == "binomial":
            s = wt * y
            lchoose = gammaln(wt + 1.0) - gammaln(s + 1.0) - gammaln(wt - s + 1.0)
            return -2.0 * (lchoose + xlogy(s, mu) + xlogy(wt - s, 1.0 - mu))
        return -2.0 * (xlogy(y, mu) - mu - gammaln(y + 1.0))

    def saturated(self, y: FloatArray, wt: FloatArray) -> FloatArray:
        """Each row's -2 log-likelihood of the saturated model (mu = y)."""
        mu = np.clip(y, _EPS, 1.0 - _EPS) if self.name == "binomial" else np.maximum(y, _EPS)
        return self.minus2loglik(y, mu, wt) - self.dev_resid(y, mu, wt)


def family(name: str, link: str | None = None) -> Family:
    """The family ``name`` with ``link`` (default: logit for binomial, log for Poisson).

    Raises
    ------
    DataError
        An unknown family, or a link the family does not have (the valid combinations listed).
    """
    if name not in LINKS:
        raise DataError(f"family must be one of {', '.join(map(repr, LINKS))}; got {name!r}")
    chosen = LINKS[name][0] if link is None else link
    return Family(name, chosen)  # type: ignore[arg-type]  # checked in __post_init__


def check_response(
    fam: Family,
    successes: FloatArray,
    trials: FloatArray,
    offset: FloatArray,
    *,
    response: str,
    trials_name: str | None,
) -> None:
    """Refuse a response the family cannot have produced, naming the column and the first row.

    Parameters
    ----------
    fam : Family
    successes : array
        Binomial successes (or the 0/1 outcome) / Poisson counts.
    trials : array
        Binomial trials (1 for a 0/1 outcome); ones for Poisson.
    offset : array
        The offset on the linear predictor's scale (log exposure for Poisson).
    response, trials_name : str
        Names for the messages.

    Raises
    ------
    DataError
    """

    def first(bad: NDArray[np.bool_]) -> str:
        rows = np.flatnonzero(bad)
        return f"{rows.size:,} rows, first at row {int(rows[0])} (value {successes[rows[0]]!r})"

    if not np.all(np.isfinite(offset)):
        bad = ~np.isfinite(offset)
        raise DataError(
            f"the offset/exposure has {int(bad.sum()):,} non-finite values (an exposure must be "
            f"positive: log of zero or a negative number), first at row {int(np.argmax(bad))}"
        )
    if fam.name == "poisson":
        if np.any(successes < 0):
            raise DataError(
                f"a Poisson response must be a count: {response!r} is negative in "
                f"{first(successes < 0)}"
            )
        frac = successes != np.round(successes)
        if np.any(frac):
            raise DataError(
                f"a Poisson response must be a whole number: {response!r} is not in {first(frac)}"
            )
        return
    if not np.all(np.isfinite(trials)) or np.any(trials <= 0):
        bad = ~np.isfinite(trials) | (trials <= 0)
        raise DataError(
            f"the binomial trials {trials_name!r} must be positive: {int(bad.sum()):,} rows are "
            f"not, first at row {int(np.argmax(bad))}"
        )
    if trials_name is None:
        out = (successes < 0) | (successes > 1)
        if np.any(out):
            raise DataError(
                f"a binomial response must lie in [0, 1] (a 0/1 outcome); {response!r} is outside "
                f"in {first(out)}; for counts of successes give the trials (cbind(successes, "
                "failures) ~ ..., or trials='column')"
            )
        frac = (successes != 0) & (successes != 1)
        if np.any(frac):
            raise DataError(
                f"a binomial response without trials must be 0 or 1; {response!r} is not in "
                f"{first(frac)}; for proportions give the number of trials (trials='column')"
            )
        return
    if np.any(successes < 0):
        raise DataError(
            f"binomial successes cannot be negative: {response!r} is in {first(successes < 0)}"
        )
    frac = np.abs(successes - np.round(successes)) > 1e-8 * np.maximum(1.0, trials)
    if np.any(frac):
        raise DataError(
            f"binomial successes must be whole numbers: {response!r} (successes = proportion x "
            f"trials) is not in {first(frac)}"
        )
    over = successes > trials + 1e-8
    if np.any(over):
        rows = np.flatnonzero(over)
        raise DataError(
            f"binomial trials {trials_name!r} are fewer than the successes {response!r} in "
            f"{rows.size:,} rows, first at row {int(rows[0])} ({successes[rows[0]]:g} successes "
            f"of {trials[rows[0]]:g} trials)"
        )
    frac_t = trials != np.round(trials)
    if np.any(frac_t):
        raise DataError(
            f"binomial trials {trials_name!r} must be whole numbers; {int(frac_t.sum()):,} rows "
            f"are not, first at row {int(np.argmax(frac_t))}"
        )
