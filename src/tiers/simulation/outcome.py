"""The outcome of a simulated design: normal, binary (Bernoulli) or counts (Poisson).

A GLMM design is the linear design on the link scale: the level effects, the covariates'
contributions and the intercept add up to the linear predictor ``eta``, and the outcome is drawn
given ``eta`` (McCullagh & Nelder 1989, ch. 4 and 6; Snijders & Bosker 2012, ch. 17):

* binomial: ``y ~ Bernoulli(g^-1(eta))`` drawn as ``y = 1[u < g^-1(eta)]`` from one uniform ``u``
  per row. This is the latent-variable model ``y = 1[eta + e > 0]`` with ``e`` logistic (logit
  link, latent residual variance pi^2/3), standard normal (probit, 1) or minus a Gumbel (cloglog,
  pi^2/6), so the level SDs are SDs on that latent scale;
* poisson: ``y ~ Poisson(exposure * exp(eta))``; with an exposure column the model to fit has
  ``offset(log(exposure))`` (Stata's ``exposure()``).

The families and links are those `tiers.fit` fits (`tiers.formula.glm.LINKS`).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit, ndtr

from tiers.errors import DesignError
from tiers.formula.glm import LINKS

FloatArray = NDArray[np.float64]

#: The families a design may have; ``gaussian`` is the linear model with a residual SD.
FAMILIES: tuple[str, ...] = ("gaussian", *LINKS)


def check_family(family: object, link: object) -> tuple[str, str]:
    """The family and its link (the family's default link when ``link`` is None), checked.

    Raises
    ------
    DesignError
        An unknown family, or a link the family does not have (the valid pairs are listed).
    """
    if family not in FAMILIES:
        raise DesignError(f"family must be one of {', '.join(FAMILIES)}; got {family!r}")
    valid = {"gaussian": ("identity",), **LINKS}
    links = valid[str(family)]
    if link is None:
        return str(family), links[0]
    if link not in links:
        pairs = "; ".join(f"{f}: {', '.join(ls)}" for f, ls in valid.items())
        raise DesignError(
            f"the {family} family has no {link!r} link; valid combinations are {pairs}"
        )
    return str(family), str(link)


def check_exposure(family: str, exposure: object, lo: float, hi: float) -> None:
    """An exposure column belongs to a Poisson design and needs ``0 < lo <= hi``."""
    if exposure is None:
        return
    if family != "poisson":
        raise DesignError(
            f"an exposure column ({exposure!r}) goes with family 'poisson' (counts per unit of "
            f"exposure); this design's family is {family!r}"
        )
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 < lo <= hi):
        raise DesignError(
            f"exposure_range must be two finite numbers 0 < low <= high; got [{lo!r}, {hi!r}]"
        )


def inverse_link(link: str, eta: FloatArray) -> FloatArray:
    """The mean from the linear predictor (the links of `check_family`)."""
    if link == "logit":
        return np.asarray(expit(eta))
    if link == "probit":
        return np.asarray(ndtr(eta))
    if link == "cloglog":
        return -np.expm1(-np.exp(eta))
    if link == "log":
        return np.exp(eta)
    raise DesignError(f"no inverse for the {link!r} link")  # check_family refuses it first


def draw_outcome(
    family: str, link: str, eta: FloatArray, exposure: FloatArray | None, rng: np.random.Generator
) -> tuple[NDArray[np.int64], FloatArray]:
    """The binary or count outcome given the linear predictor, and its conditional mean.

    Binomial: one uniform per row (``random(nrows)``); Poisson: ``rng.poisson`` of the mean
    ``exposure * exp(eta)``, whose number of underlying draws depends on the means.
    """
    mu = inverse_link(link, eta)
    if family == "binomial":
        return (rng.random(eta.size) < mu).astype(np.int64), mu
    if exposure is not None:
        mu *= exposure
    if not np.all(np.isfinite(mu)) or mu.max(initial=0.0) > 1e15:
        raise DesignError(
            "the Poisson means exp(eta) overflow (above 1e15): the intercept, coefficients or SDs "
            "are too large for counts on the log scale"
        )
    return rng.poisson(mu).astype(np.int64), mu
